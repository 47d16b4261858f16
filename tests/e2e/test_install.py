"""`cmake --install` gives a working `greta`: installed into a temporary prefix, PREFIX/bin/greta
runs and answers --help and --version."""
import os
import shutil
import subprocess

import pytest


def test_cmake_install_gives_a_working_greta(greta_bin, tmp_path):
    build = os.path.dirname(greta_bin)
    if shutil.which("cmake") is None or not os.path.exists(os.path.join(build, "cmake_install.cmake")):
        pytest.skip(f"no cmake, or {build} is not a CMake build folder")
    prefix = tmp_path / "prefix"
    subprocess.run(["cmake", "--install", build, "--prefix", str(prefix)], check=True, capture_output=True,
                   timeout=60)
    installed = prefix / "bin" / "greta"
    assert installed.is_file() and os.access(installed, os.X_OK), sorted(str(p) for p in prefix.rglob("*"))
    p = subprocess.run([str(installed), "--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "run" in p.stdout and "serve" in p.stdout, p.stdout + p.stderr
    p = subprocess.run([str(installed), "--version"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.startswith("greta "), p.stdout + p.stderr
