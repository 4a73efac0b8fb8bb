"""Compiles a CUDA source for the CPU emulator: entry-point discovery, launcher generation and
an on-disk cache of the resulting shared objects.

The translation unit is ``cuda_emu.h``, then the kernel text byte for byte as written to the
build folder (so ``__FILE__`` is its file name unless the text carries ``#line`` directives),
then one ``GL_EMU_ENTRY(name)`` per ``extern "C" __global__`` entry point.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = HERE / "cuda_emu.h"
REPO = HERE.parents[1]
CXX = "g++"
# No -ffast-math, no -march=native and no FMA contraction: results must equal NumPy's bit
# for bit wherever the GPU build (NVRTC --fmad=false) does. _FORTIFY_SOURCE would turn the
# scheduler's cross-stack _longjmp into __longjmp_chk, which aborts on it. Stack-clash
# protection probes every page of a large frame, so a fiber overflowing its stack always
# lands in the guard zone below it (and is reported) instead of in a neighbour's stack.
CXXFLAGS = ("-std=c++17", "-O2", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math",
            "-U_FORTIFY_SOURCE", "-fstack-clash-protection", "-Wall", "-Wno-unknown-pragmas",
            "-Wno-unused-variable", "-Wno-unused-but-set-variable", "-Wno-unused-function")
MARKER = "GL_EMU_GLOBAL_MARKER"

_ENTRY = re.compile(r'extern\s*"C"\s+((?:\w+\s+)*?)' + MARKER
                    + r'\s+((?:\w+\s+)*?)void\s+(\w+)\s*\(')
_version_lock = threading.Lock()
_version: list = []


class CompileError(RuntimeError):
    """The kernel source failed to preprocess or compile; the message carries the log."""


@dataclass(frozen=True)
class Built:
    so_path: Path
    entries: tuple  # ((name, (param names...)), ...) in source order
    built: bool  # False when the cache already held it


def cache_dir() -> Path:
    env = os.environ.get("GRADLAB_EMU_CACHE")
    return Path(env) if env else REPO / ".cache" / "cuda_emulator"


def compiler_version() -> str:
    with _version_lock:
        if not _version:
            try:
                out = subprocess.run([CXX, "--version"], capture_output=True, text=True,
                                     check=True).stdout
            except (OSError, subprocess.CalledProcessError) as exc:
                raise CompileError(f"the CUDA emulator needs {CXX}: {exc}") from exc
            _version.append(out.strip())
        return _version[0]


def translate_options(options) -> tuple:
    """NVRTC options that change the meaning of the source (macros) become g++ flags; the
    rest (architecture, --std, --fmad, ...) have no CPU counterpart and are dropped."""
    out = []
    opts = list(options)
    i = 0
    while i < len(opts):
        o = str(opts[i])
        for long, short in (("--define-macro", "-D"), ("--undefine-macro", "-U")):
            if o.startswith(long + "="):
                out.append(short + o[len(long) + 1:])
                break
            if o == long and i + 1 < len(opts):
                i += 1
                out.append(short + str(opts[i]))
                break
        else:
            if (o.startswith("-D") or o.startswith("-U")) and len(o) > 2:
                out.append(o)
            elif o in ("-D", "-U") and i + 1 < len(opts):
                i += 1
                out.append(o + str(opts[i]))
        i += 1
    return tuple(out)


def _safe_filename(filename: str) -> str:
    name = os.path.basename(str(filename)) or "kernel.cu"
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def cache_key(source: str, filename: str, defines: tuple) -> str:
    h = hashlib.sha256()
    for part in (b"gradlab-cuda-emulator-v1", source.encode(), HEADER.read_bytes(),
                 Path(__file__).read_bytes(), repr(CXXFLAGS).encode(), repr(defines).encode(),
                 compiler_version().encode(), filename.encode()):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def _split_params(text: str) -> list:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "(<[":
            depth += 1
        elif ch in ")>]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def _param_name(param: str) -> str:
    words = re.findall(r"[A-Za-z_]\w*", re.sub(r"\[[^\]]*\]", "", param))
    keywords = {"const", "volatile", "unsigned", "signed", "long", "short", "int", "char",
                "float", "double", "bool", "void", "__restrict__", "__restrict", "struct"}
    if len(words) < 2 or words[-1] in keywords:
        return ""
    return words[-1]


def parse_entries(preprocessed: str) -> tuple:
    """(name, param names) for every `extern "C" __global__ void name(...)` in `g++ -E`
    output (where __global__ is the marker token)."""
    entries, seen = [], set()
    for m in _ENTRY.finditer(preprocessed):
        name = m.group(3)
        depth, i = 1, m.end()
        while i < len(preprocessed) and depth:
            depth += {"(": 1, ")": -1}.get(preprocessed[i], 0)
            i += 1
        params = preprocessed[m.end():i - 1].strip()
        names = () if params in ("", "void") else tuple(_param_name(p)
                                                        for p in _split_params(params))
        if name not in seen:  # a declaration followed by its definition
            seen.add(name)
            entries.append((name, names))
    return tuple(entries)


def _run(cmd, cwd, what):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError(f"{what} failed (exit {proc.returncode}):\n$ {' '.join(cmd)}\n"
                           f"{proc.stderr.strip()}")
    return proc


def build(source: str, *, filename: str = "kernel.cu", options=()) -> Built:
    """The shared object for `source`, from the cache or freshly compiled."""
    fname = _safe_filename(filename)
    defines = translate_options(options)
    key = cache_key(source, fname, defines)
    root = cache_dir()
    final = root / key[:40]
    meta = final / "meta.json"
    if meta.is_file():
        return _load_meta(final, built=False)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=root))
    try:
        (tmp / fname).write_text(source, encoding="utf-8", newline="")
        shutil.copyfile(HEADER, tmp / "cuda_emu.h")
        pre = _run([CXX, "-E", "-P", "-x", "c++", "-std=c++17", "-DGL_EMU_DISCOVER", *defines,
                    "-include", "cuda_emu.h", fname], tmp, "preprocessing for entry points")
        entries = parse_entries(pre.stdout)
        lines = ['#include "cuda_emu.h"', f'#include "{fname}"', ""]
        lines += [f"GL_EMU_ENTRY({name})" for name, _ in entries]
        (tmp / "tu.cpp").write_text("\n".join(lines) + "\n", encoding="utf-8")
        proc = _run([CXX, *CXXFLAGS, *defines, "tu.cpp", "-o", "module.so"], tmp,
                    f"compiling {fname} for the CUDA emulator")
        (tmp / "build.log").write_text(proc.stderr, encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps({
            "filename": fname, "entries": [[n, list(p)] for n, p in entries],
        }), encoding="utf-8")
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same build first; its result is identical.
            if not meta.is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return _load_meta(final, built=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _load_meta(final, built=True)


def _load_meta(folder: Path, built: bool) -> Built:
    data = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    entries = tuple((n, tuple(p)) for n, p in data["entries"])
    return Built(folder / "module.so", entries, built)
