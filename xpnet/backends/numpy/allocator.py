"""The C allocator under NumPy's arrays: keep freed training buffers instead of giving them back.

A training step allocates and frees the same large arrays (activations, gradients, columns) every
step. glibc's malloc serves a block above its mmap threshold with a fresh ``mmap`` and returns it to
the kernel when freed, and trims the top of its heap when more than the trim threshold is free; both
thresholds start small (128 KiB, 256 KiB) and move with what the process happens to free. Depending
on the order of allocations, a step can then take every one of its pages afresh from the kernel:
LeNet-5 at batch 128 took 811,000 page faults in 300 steps where the same code, laid out a little
differently, took 401,000, and 12,500 with the thresholds below (1.1 s of system time, about a
quarter of the run). Fixed thresholds make that independent of layout: blocks up to
``MMAP_THRESHOLD`` come from the heap, and up to ``TRIM_THRESHOLD`` of free heap is kept for the
next step. The cost is memory the process keeps after it frees it (at most ``TRIM_THRESHOLD`` per
arena), which a training process reuses at its next step anyway.

This changes a process-wide setting, so it is done only when all of these hold: Linux with glibc,
``XPNET_MALLOC_TUNING`` is not ``0``, the user set none of glibc's own ``MALLOC_*`` tunables, and
no other allocator is preloaded (``LD_PRELOAD``). ``status()`` says what was done (``xpnet info``
prints it).
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 64 << 20  # blocks up to 64 MiB from the heap: VGG's largest buffers at batch 64 fit
TRIM_THRESHOLD = 256 << 20  # keep up to 256 MiB of freed heap for the next step
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)

_status = "not applied yet"


def _reason_to_skip() -> str | None:
    if os.environ.get("XPNET_MALLOC_TUNING", "").strip() == "0":
        return "off (XPNET_MALLOC_TUNING=0)"
    if not sys.platform.startswith("linux"):
        return f"not on {sys.platform} (glibc only)"
    own = sorted(k for k in os.environ if k.startswith("MALLOC_") or k.startswith("GLIBC_TUNABLES"))
    if own:
        return f"left to the environment ({', '.join(own)} set)"
    if os.environ.get("LD_PRELOAD", "").strip():
        return "left to the preloaded allocator (LD_PRELOAD is set)"
    return None


def tune() -> str:
    """Apply the thresholds once (see the module docstring); returns ``status()``."""
    global _status
    if _status != "not applied yet":
        return _status
    reason = _reason_to_skip()
    if reason is None:
        try:
            libc = ctypes.CDLL(None)
            libc.gnu_get_libc_version.restype = ctypes.c_char_p
            version = libc.gnu_get_libc_version().decode()
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            reason = "not glibc"
        else:
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1:
                _status = (f"glibc {version}: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold "
                           f"{TRIM_THRESHOLD >> 20} MiB (XPNET_MALLOC_TUNING=0 leaves glibc's defaults)")
                return _status
            reason = f"glibc {version} refused mallopt"
    _status = f"glibc defaults: {reason}"
    return _status


def status() -> str:
    """What ``tune`` did, in one line."""
    return _status
