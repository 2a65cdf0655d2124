"""nn.SyncBatchNorm: on two MPI ranks it equals BatchNorm on the concatenated batch; in one process
(no process group) it is BatchNorm2d exactly, on every CPU backend; convert_sync_batchnorm."""

from __future__ import annotations


import numpy as np
import pytest
from mpi_runner import mpirun  # noqa: F401  -- the fixture

import xpnet
import xpnet.distributed as dist
from xpnet import nn


TWO_RANKS = """
import numpy as np
import xpnet
import xpnet.distributed as dist
from xpnet import nn

dist.init_process_group(backend="mpi")
r, w = dist.get_rank(), dist.get_world_size()
rng = np.random.default_rng(11)


def close(a, b, what):
    a, b = xpnet.to_numpy(a), xpnet.to_numpy(b)
    assert a.shape == b.shape and np.allclose(a, b, rtol=1e-10, atol=1e-12), (what, np.max(np.abs(a - b)))


# (global shape, rows of rank 0, reference class, SyncBatchNorm kwargs); inputs far from zero mean
cases = [((8, 3, 4, 4), 4, nn.BatchNorm2d, {}), ((8, 3, 4, 4), 5, nn.BatchNorm2d, {"momentum": None}),
         ((10, 3), 6, nn.BatchNorm1d, {}), ((6, 3, 5), 2, nn.BatchNorm1d, {"affine": False}),
         ((8, 3, 2, 2), 4, nn.BatchNorm2d, {"track_running_stats": False})]
for shape, rows0, Ref, kwargs in cases:
    lo, hi = (0, rows0) if r == 0 else (rows0, shape[0])
    ref = Ref(3, **kwargs).double()
    sync = nn.SyncBatchNorm(3, **kwargs).double()
    if ref.affine:
        for m in (ref, sync):
            m.weight.copy_(xpnet.tensor(np.array([0.5, 2.0, -1.0])))
            m.bias.copy_(xpnet.tensor(np.array([0.1, -0.3, 0.7])))
    for step in range(2):
        xg = rng.standard_normal(shape) * 3.0 + 50.0
        gg = rng.standard_normal(shape)
        x_ref = xpnet.tensor(xg, requires_grad=True)
        y_ref = ref(x_ref)
        (y_ref * xpnet.tensor(gg)).sum().backward()
        x = xpnet.tensor(xg[lo:hi], requires_grad=True)
        y = sync(x)
        (y * xpnet.tensor(gg[lo:hi])).sum().backward()
        close(y, y_ref.data[lo:hi], ("y", shape, kwargs))
        close(x.grad, x_ref.grad.data[lo:hi], ("dx", shape, kwargs))
        if sync.affine:
            for p, q in ((sync.weight, ref.weight), (sync.bias, ref.bias)):
                g = p.grad.data.copy()
                dist.all_reduce(g)          # per-rank sums, as torch: DDP averages them
                close(g, q.grad, ("dgamma/dbeta", shape))
                p.grad = q.grad = None
        for a, b in zip(sync.buffers(), ref.buffers()):
            close(a, b, ("running stats", shape, kwargs))
    sync.eval()
    ref.eval()
    xg = rng.standard_normal(shape) + 50.0
    close(sync(xpnet.tensor(xg[lo:hi])), ref(xpnet.tensor(xg)).data[lo:hi], ("eval", shape))

# a batch with one value per channel over all ranks cannot be normalised
try:
    nn.SyncBatchNorm(2).double()(xpnet.tensor(np.ones((1, 2, 1, 1)) * r) if r == 0 else
                                  xpnet.tensor(np.ones((0, 2, 1, 1))))
    raise AssertionError("no error")
except ValueError as exc:
    assert "more than 1 value per channel" in str(exc), exc
print(f"rank {r} ok")
"""


def test_sync_batchnorm_on_two_ranks_equals_batchnorm(mpirun):
    code, out, err = mpirun(TWO_RANKS, timeout=90)
    assert code == 0, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert "rank 0 ok" in out and "rank 1 ok" in out, out + err


needs_no_group = pytest.mark.skipif(dist.is_initialized(), reason="a process group runs in this process")


@needs_no_group
@pytest.mark.parametrize("shape", [(6, 3, 4, 4), (5, 3)])
def test_sync_batchnorm_without_group_is_batchnorm(backend, shape, rng):
    ref = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(3).double()
    sync = nn.SyncBatchNorm(3).double()
    sync.load_state_dict(ref.state_dict())
    for _ in range(2):
        xg = rng.standard_normal(shape) + 4.0
        gg = xpnet.tensor(rng.standard_normal(shape))
        outs = []
        for m in (ref, sync):
            x = xpnet.tensor(xg, requires_grad=True)
            y = m(x)
            (y * gg).sum().backward()
            outs.append((xpnet.to_numpy(y.data), xpnet.to_numpy(x.grad.data)))
        np.testing.assert_array_equal(outs[0][0], outs[1][0])
        np.testing.assert_array_equal(outs[0][1], outs[1][1])
        for p, q in zip(ref.parameters(), sync.parameters()):
            np.testing.assert_array_equal(xpnet.to_numpy(p.grad.data), xpnet.to_numpy(q.grad.data))
    for (k, a), (_, b) in zip(ref.state_dict().items(), sync.state_dict().items()):
        np.testing.assert_array_equal(xpnet.to_numpy(a.data), xpnet.to_numpy(b.data), err_msg=k)
    ref.eval(), sync.eval()
    x = xpnet.tensor(rng.standard_normal(shape))
    np.testing.assert_array_equal(xpnet.to_numpy(ref(x).data), xpnet.to_numpy(sync(x).data))


def test_convert_sync_batchnorm_keeps_state(backend, rng):
    xpnet.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Sequential(nn.Linear(4 * 4 * 4, 5), nn.BatchNorm1d(5, affine=False, momentum=None)))
    model(xpnet.tensor(rng.standard_normal((3, 2, 6, 6)).astype(np.float32)))  # running stats move
    model[4][1].eval()
    before = {k: xpnet.to_numpy(v.data).copy() for k, v in model.state_dict().items()}
    weight = model[1].weight
    out = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert out is model
    assert type(model[1]) is nn.SyncBatchNorm and type(model[4][1]) is nn.SyncBatchNorm
    assert model[1].weight is weight and model[1].training and not model[4][1].training
    assert model[4][1].momentum is None and not model[4][1].affine
    after = model.state_dict()
    assert list(after) == list(before)
    for k, v in after.items():
        np.testing.assert_array_equal(xpnet.to_numpy(v.data), before[k], err_msg=k)
    single = nn.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm2d(3, eps=1e-3))
    assert type(single) is nn.SyncBatchNorm and single.eps == 1e-3
    assert "SyncBatchNorm(3" in repr(single)


def test_sync_batchnorm_checks():
    with pytest.raises(ValueError, match="process group"):
        nn.SyncBatchNorm(3, process_group="mine")
    with pytest.raises(ValueError, match="SyncBatchNorm"):
        nn.SyncBatchNorm(3)(xpnet.ones((2, 4, 2, 2)))
