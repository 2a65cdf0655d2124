"""The C allocator settings of the NumPy backend (xpnet/backends/numpy/allocator.py).

Each case runs in a fresh interpreter: the settings are process-wide and applied at import."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")

# a "step" allocates three 16 MiB blocks, touches and frees them; the page faults of the later steps
# say whether the freed pages were kept (none) or given back to the kernel and taken again
PROBE = """
import resource, numpy as np, xpnet
from xpnet.backends.numpy import allocator
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
steps = []
for _ in range(4):
    before = faults()
    a, b, c = (np.ones(1 << 22, np.float32) for _ in range(3))
    del a, b, c
    steps.append(faults() - before)
print(allocator.status())
print(min(steps[1:]))
"""


def _run(**env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "XPNET_MALLOC_TUNING"}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                          env={**clean, **env})
    assert proc.returncode == 0, proc.stderr
    status, faults = proc.stdout.strip().splitlines()
    return status, int(faults)


def test_freed_pages_are_kept_for_the_next_step():
    status, faults = _run()
    if "glibc defaults: not glibc" in status:
        pytest.skip(status)
    assert status.startswith("glibc ") and "mmap threshold 64 MiB, trim threshold 256 MiB" in status
    assert faults < 100  # 48 MiB of blocks reused, not faulted in again


def test_glibc_defaults_give_the_pages_back():
    status, faults = _run(XPNET_MALLOC_TUNING="0")
    assert status == "glibc defaults: off (XPNET_MALLOC_TUNING=0)"
    assert faults > 500  # what the tuning saves: the heap is trimmed and its pages faulted in again


def test_the_users_own_malloc_settings_win():
    status, _ = _run(MALLOC_ARENA_MAX="2")
    assert status == "glibc defaults: left to the environment (MALLOC_ARENA_MAX set)"
