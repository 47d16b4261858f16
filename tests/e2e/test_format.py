"""The C++ and CUDA sources follow .clang-format (scripts/setup.sh installs clang-format)."""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PATTERNS = ["src/*.cpp", "src/*.h", "src/*.cu", "src/*.cuh", "include/*.h", "tests/*.cpp", "tests/*.h",
            "bench/*.cu", "bench/*.cuh", "bench/*.h", "bench/*.cpp", "fuzz/*.cpp"]


def sources():
    out = subprocess.run(["git", "ls-files", *PATTERNS], cwd=ROOT, capture_output=True, text=True, check=True)
    return [f for f in out.stdout.split() if (ROOT / f).exists()]


def test_sources_are_formatted():
    exe = shutil.which("clang-format")
    if not exe:
        pytest.skip("clang-format is not installed (scripts/setup.sh installs it)")
    files = sources()
    assert files, "no sources found"
    r = subprocess.run([exe, "--dry-run", "--Werror", *files], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, "not formatted (run clang-format -i on these):\n" + r.stderr[-3000:]
