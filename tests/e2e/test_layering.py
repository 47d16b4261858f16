"""The module layering, checked on every source file's includes.

A module (a folder of src/, built as the CMake library named for it) may include headers of its
own folder, of the modules below it and the public API (include/greta/). The backends' folders
keep their headers to themselves: outside src/backend/cpu and src/backend/cuda only their public
headers (cpu_backend.h, cuda_backend.h) may be included; tests and benchmarks may reach further.
"""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)

# What each module may include besides its own folder (its CMake dependencies, transitively).
BELOW = {
    "core": ["greta"],
    "runtime": ["core", "greta"],
    "formats": ["core", "greta"],
    "grammar": ["core", "greta"],
    "tokenizer": ["formats", "core", "greta"],
    "chat": ["tokenizer", "formats", "core", "greta"],
    "backend/cpu": ["backend", "runtime", "core", "greta"],
    "backend/cuda": ["backend", "runtime", "core", "greta"],
    "backend": ["backend/cpu", "backend/cuda", "runtime", "core", "greta"],
    "model": ["backend", "tokenizer", "chat", "formats", "runtime", "core", "greta"],
    "engine": ["model", "grammar", "backend", "tokenizer", "chat", "formats", "runtime", "core", "greta"],
    "server": ["engine", "grammar", "model", "backend", "tokenizer", "chat", "formats", "runtime", "core", "greta"],
    "cli": ["server", "engine", "grammar", "model", "backend", "tokenizer", "chat", "formats", "runtime", "core", "greta"],
}
PUBLIC_BACKEND_HEADERS = {"backend/cpu/cpu_backend.h", "backend/cuda/cuda_backend.h"}


def module_of(path):
    rel = path.relative_to(ROOT / "src").parent.as_posix()
    return rel if rel in BELOW else rel.split("/")[0]


def folder_of(header):
    parts = header.split("/")
    if parts[0] == "backend" and len(parts) > 2:
        return "backend/" + parts[1]
    return parts[0]


def violations():
    out = []
    for path in sorted((ROOT / "src").rglob("*")):
        if path.suffix not in (".h", ".cpp", ".cu", ".cuh"):
            continue
        mod = module_of(path)
        for header in INCLUDE.findall(path.read_text(errors="replace")):
            folder = folder_of(header)
            if folder == mod:
                continue
            if folder not in BELOW[mod]:
                out.append(f"{path.relative_to(ROOT)}: {mod} includes {header} (a module above it)")
            elif folder.startswith("backend/") and header not in PUBLIC_BACKEND_HEADERS:
                out.append(f"{path.relative_to(ROOT)}: {mod} includes {header}, private to src/{folder}")
    return out


def test_every_module_includes_only_what_lies_below_it():
    assert violations() == []


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    # The checker itself must be able to fail: a core file that reaches up into the engine, and
    # a model file that reaches into the CUDA backend's internals.
    fake = tmp_path / "src"
    (fake / "core").mkdir(parents=True)
    (fake / "model").mkdir()
    (fake / "core" / "x.h").write_text('#include "engine/scheduler.h"\n')
    (fake / "model" / "y.cpp").write_text('#include "backend/cuda/cuda_ops.h"\n#include "backend/backend.h"\n')
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    found = violations()
    assert len(found) == 2, found


def test_public_headers_are_self_contained():
    # include/greta/ is what a user of the library sees: it includes only itself and the standard library.
    for path in sorted((ROOT / "include" / "greta").glob("*.h")):
        for header in INCLUDE.findall(path.read_text()):
            assert header.startswith("greta/"), f"{path.relative_to(ROOT)} includes private {header}"
