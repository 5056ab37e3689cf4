"""What the machine offers, detected at run time (never assumed)."""
from __future__ import annotations

import functools
from pathlib import Path

import torch


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (empty where that file does not exist)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True where bf16 matrix work runs natively on the CPU (AMX or AVX-512 BF16) and oneDNN supports it."""
    flags = cpu_flags()
    native = bool({"amx_bf16", "avx512_bf16"} & flags)
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn = False
    return native and onednn


def describe_cpu() -> str:
    """'<model name>, N threads' for benchmark tables."""
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    extras = [f for f in ("amx_bf16", "avx512_bf16") if f in cpu_flags()]
    return f"{name} ({', '.join(extras) or 'no bf16 units'}), torch threads {torch.get_num_threads()}"


def release_freed_memory() -> bool:
    """Hand memory the process has freed back to the system (glibc's malloc_trim): after one-off large
    work (the precision timing and calibration of a model at tile size), freed blocks otherwise stay in
    the allocator's arenas and count in the resident set for the rest of the process. False where the C
    library has no malloc_trim (not glibc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False
