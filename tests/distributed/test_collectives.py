"""xpnet.distributed on two MPI ranks (``mpiexec -n 2``), and its errors in a single process.

Each MPI script checks its results with ``assert`` on every rank and prints ``rank R ok`` at the
end; a failed assert aborts the whole job (xpnet's excepthook), so mpiexec exits non-zero.
The ``mpirun`` fixture runs a script under ``mpiexec -n N`` in a subprocess with a time limit
(killing the job's process group after it), and skips with the reason where mpiexec or mpi4py is
missing.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from mpi_runner import mpirun  # noqa: F401  -- the fixture

import xpnet
import xpnet.distributed as dist


COLLECTIVES = """
import numpy as np
import xpnet
import xpnet.distributed as dist
from xpnet.distributed import ReduceOp

assert not dist.is_initialized()
dist.init_process_group(backend="mpi")
assert dist.is_initialized() and dist.get_backend() == "mpi"
r, w = dist.get_rank(), dist.get_world_size()
assert w == 2 and dist.get_local_rank() == r and dist.get_local_world_size() == 2
try:
    dist.init_process_group()
    raise AssertionError("init twice did not raise")
except RuntimeError as exc:
    assert "twice" in str(exc)

# all_reduce, sync and async, SUM / AVG / MAX on NumPy arrays: in place, same array object
for async_op in (False, True):
    for op, expected in ((ReduceOp.SUM, 3.0), (ReduceOp.AVG, 1.5), (ReduceOp.MAX, 2.0), ("min", 1.0)):
        a = np.full(5, r + 1.0)
        before = a
        work = dist.all_reduce(a, op=op, async_op=async_op)
        if async_op:
            assert work.wait() is True and work.is_completed()
        else:
            assert work is None
        assert a is before and np.array_equal(a, np.full(5, expected)), (op, async_op, a)
ints = np.array([r + 1, 10 * (r + 1)], dtype=np.int64)
dist.all_reduce(ints, op=ReduceOp.PRODUCT)
assert ints.dtype == np.int64 and ints.tolist() == [2, 200]
view = np.zeros((3, 4))[:, 1]          # not contiguous: a host copy, written back into the view
view[:] = r + 1
dist.all_reduce(view)
assert np.array_equal(view, [3.0, 3.0, 3.0])

# xpnet Tensors keep their dtype (and their array, when it is writable)
for dtype in (xpnet.float32, xpnet.float64, xpnet.float16):
    for async_op in (False, True):
        t = xpnet.ones(4, dtype=dtype) * (r + 1)
        array = t.data
        work = dist.all_reduce(t, op=ReduceOp.AVG, async_op=async_op)
        if async_op:
            work.wait()
        assert t.dtype == dtype and t.data is array, (dtype, t.dtype)
        assert np.array_equal(t.numpy(), np.full(4, 1.5)), t.numpy()
frozen = np.full(3, r + 1.0)
frozen.flags.writeable = False
t = xpnet.Tensor(frozen)
dist.all_reduce(t)                      # a read-only array: the Tensor's .data is rebound
assert t.data is not frozen and np.array_equal(t.numpy(), [3.0, 3.0, 3.0]) and frozen[0] == r + 1

# array_api_strict arrays, raw and inside Tensors
with xpnet.use_backend("array_api_strict"):
    s = xpnet.ones(3) * (r + 1)
    raw = s.data
    work = dist.all_reduce(raw, op=ReduceOp.MAX, async_op=True)
    work.wait()
    assert type(raw).__module__.startswith("array_api_strict") and xpnet.to_numpy(raw).tolist() == [2.0] * 3
    s64 = xpnet.ones(2, dtype=xpnet.float64) * (r + 1)
    dist.all_reduce(s64, op=ReduceOp.SUM)
    assert xpnet.float64 == s64.dtype and xpnet.to_numpy(s64.data).tolist() == [3.0, 3.0]
    b = xpnet.ones(2) * (r + 7)
    dist.broadcast(b, src=1)
    assert xpnet.to_numpy(b.data).tolist() == [8.0, 8.0]

# broadcast, all_gather, reduce_scatter, barrier
b = np.arange(4.0) * (r + 1)
dist.broadcast(b, src=1)
assert np.array_equal(b, np.arange(4.0) * 2)
bt = xpnet.full((2, 2), float(r))
work = dist.broadcast(bt, src=0, async_op=True)
work.wait()
assert np.array_equal(bt.numpy(), np.zeros((2, 2)))
outs = [xpnet.zeros(2, dtype=xpnet.int64) for _ in range(w)]
dist.all_gather(outs, xpnet.tensor([r, 10 * r]))
assert [o.numpy().tolist() for o in outs] == [[0, 0], [1, 10]] and outs[0].dtype == xpnet.int64
raw_outs = [np.zeros(3, dtype=np.float32) for _ in range(w)]
dist.all_gather(raw_outs, np.full(3, r + 0.5, dtype=np.float32), async_op=True).wait()
assert [o.tolist() for o in raw_outs] == [[0.5] * 3, [1.5] * 3]
out = np.zeros(2)
dist.reduce_scatter(out, [np.full(2, 1.0 + r), np.full(2, 10.0 + r)], op=ReduceOp.SUM)
assert out.tolist() == ([3.0, 3.0] if r == 0 else [21.0, 21.0])
dist.barrier()
dist.barrier(async_op=True).wait()

# small Python objects
objects = [None] * w
dist.all_gather_object(objects, {"rank": r, "pair": (r, "x")})
assert objects == [{"rank": 0, "pair": (0, "x")}, {"rank": 1, "pair": (1, "x")}], objects
items = [r, {"k": [r]}]
dist.broadcast_object_list(items, src=1)
assert items == [1, {"k": [1]}]

# the loader and the sampler see the group
from xpnet.data import DataLoader, DistributedSampler, TensorDataset
data = TensorDataset(np.arange(10, dtype=np.float32)[:, None], np.arange(10))
sampler = DistributedSampler(data, shuffle=False)
assert (sampler.num_replicas, sampler.rank) == (2, r)
seen = [int(v) for _, y in DataLoader(data, batch_size=2, sampler=sampler) for v in y.numpy()]
everyone = [None] * w
dist.all_gather_object(everyone, seen)
assert sorted(everyone[0] + everyone[1]) == list(range(10)), everyone

dist.destroy_process_group()
assert not dist.is_initialized()
dist.init_process_group()               # a new group after destroy
assert dist.get_world_size() == 2
dist.destroy_process_group()
print(f"rank {r} ok", flush=True)
"""


def test_collectives_on_two_ranks(mpirun):
    code, out, err = mpirun(COLLECTIVES)
    assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "rank 0 ok" in out and "rank 1 ok" in out, out


TIMEOUT_AND_FAILURE = """
import sys, time
import numpy as np
import xpnet.distributed as dist

dist.init_process_group(timeout=0.3)
r = dist.get_rank()
if r == 1:
    time.sleep(1.0)
work = dist.barrier(async_op=True)
if r == 0:
    try:
        work.wait()
        raise AssertionError("no TimeoutError")
    except TimeoutError as exc:
        assert "barrier" in str(exc)
        print("rank 0 timed out", flush=True)
work.wait(timeout=30)
print(f"rank {r} joined", flush=True)
dist.barrier()
if r == 1:
    raise ValueError("rank 1 fails on purpose")
a = np.ones(3)
dist.all_reduce(a)   # rank 1 never comes: the job must end anyway
print("rank 0 should not get here", flush=True)
"""


def test_timeout_then_a_failing_rank_ends_the_job(mpirun):
    code, out, err = mpirun(TIMEOUT_AND_FAILURE, timeout=60)
    assert "rank 0 timed out" in out and "rank 0 joined" in out and "rank 1 joined" in out, out + err
    assert code != 0 and "should not get here" not in out
    assert "rank 1 fails on purpose" in err


# -- one process, no MPI started ---------------------------------------------------------------------
@pytest.mark.parametrize("call, name", [
    (lambda: dist.all_reduce(np.ones(2)), "all_reduce"),
    (lambda: dist.broadcast(np.ones(2), 0), "broadcast"),
    (lambda: dist.all_gather([np.ones(2)], np.ones(2)), "all_gather"),
    (lambda: dist.barrier(), "barrier"),
    (lambda: dist.get_rank(), "get_rank"),
    (lambda: dist.get_world_size(), "get_world_size"),
    (lambda: dist.all_gather_object([None], 1), "all_gather_object"),
])
def test_collective_before_init_names_the_function(call, name):
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match=rf"xpnet\.distributed\.{name}: .*not initialized"):
        call()


def test_bad_backend_and_missing_mpi4py(monkeypatch):
    with pytest.raises(ValueError, match="backend must be"):
        dist.init_process_group(backend="ucc")
    for name in [m for m in sys.modules if m == "mpi4py" or m.startswith("mpi4py.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r'pip install "xpnet\[mpi\]"'):
        dist.init_process_group()
    assert not dist.is_available() and not dist.is_initialized()


def test_reduce_op_names():
    assert [op.name for op in dist.ReduceOp] == ["SUM", "AVG", "PRODUCT", "MAX", "MIN"]
    assert xpnet.distributed is dist
