"""nn.parallel.DistributedDataParallel on two MPI ranks against single-process training.

Each rank takes half of the global batch with a per-rank mean loss; the reference trains the same
model in one process on the concatenated batch (float64: the two must agree to rtol 1e-10). The
MPI scripts assert on every rank and print ``rank R ok``; a failed assert aborts the job.
"""

from __future__ import annotations


import pytest
from mpi_runner import mpirun  # noqa: F401  -- the fixture

import xpnet
import xpnet.distributed as dist
from xpnet import nn
from xpnet.nn.parallel import DistributedDataParallel
from xpnet.nn.parallel.distributed import model_mismatch


COMMON = """
import numpy as np
import xpnet
import xpnet.distributed as dist
from xpnet import nn, optim
from xpnet.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group(backend="mpi")
r, w = dist.get_rank(), dist.get_world_size()
assert w == 2
data = np.random.default_rng(7)


def close(a, b, what):
    a, b = xpnet.to_numpy(a), xpnet.to_numpy(b)
    assert np.allclose(a, b, rtol=1e-10, atol=1e-13), (what, float(np.max(np.abs(a - b))))


def mlp(seed=0):
    xpnet.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).double()


def convnet(seed=0):
    xpnet.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 3)).double()


def batches(shape, steps, n=8):
    return [(xpnet.tensor(data.standard_normal((n,) + shape)), xpnet.tensor(data.integers(0, 3, n)))
            for _ in range(steps)]


def half(t):
    k = t.shape[0] // w
    return t[r * k:(r + 1) * k]
"""

TRAINING = COMMON + """
loss_fn = nn.CrossEntropyLoss()


def train_case(make, shape, cap, as_view):
    steps = batches(shape, 5 if make is mlp else 3)  # 5 SGD-momentum steps without BatchNorm
    ref = make(0)
    ref_opt = optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    local = make(0 if r == 0 else 5)             # rank 1 starts elsewhere: DDP copies rank 0's
    if make is convnet:
        local = nn.SyncBatchNorm.convert_sync_batchnorm(local)
    model = DDP(local, bucket_cap_mb=cap, gradient_as_bucket_view=as_view)
    assert (model.bucket_count == 1) == (cap == 25), (cap, model.bucket_count)
    assert all(k.startswith("module.") for k in model.state_dict())
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    started_during_backward = []
    finish = model._finish_backward

    def watch():  # the end-of-backward callback: how many buckets had started before it
        started_during_backward.append(sum(b.work is not None for b in model._buckets))
        finish()

    model._finish_backward = watch
    for x, y in steps:
        ref_opt.zero_grad()
        loss_fn(ref(x), y).backward()
        ref_opt.step()
        opt.zero_grad()
        loss_fn(model(half(x)), half(y)).backward()
        for (name, p), q in zip(model.module.named_parameters(), ref.parameters()):
            close(p.grad, q.grad, ("grad", make.__name__, cap, name))
        opt.step()
    # every bucket starts inside backward, as soon as its gradients are ready (overlap)
    assert started_during_backward == [model.bucket_count] * len(steps), started_during_backward
    for (name, p), q in zip(model.module.named_parameters(), ref.parameters()):
        close(p, q, ("param", make.__name__, cap, name))
    for (name, b), c in zip(model.module.named_buffers(), ref.buffers()):
        close(b, c, ("buffer", name))


for backend, make, shape, cap, as_view in [
        ("numpy", mlp, (6,), 25, False), ("numpy", mlp, (6,), 0.0005, False), ("numpy", mlp, (6,), 0.0005, True),
        ("numpy", convnet, (2, 8, 8), 25, False), ("numpy", convnet, (2, 8, 8), 0.0002, True),
        ("array_api_strict", mlp, (6,), 0.0005, False), ("array_api_strict", convnet, (2, 8, 8), 0.0002, False)]:
    with xpnet.use_backend(backend):
        train_case(make, shape, cap, as_view)
print(f"rank {r} ok")
"""

NO_SYNC_UNUSED_ERRORS = COMMON + """
loss_fn = nn.CrossEntropyLoss()

# no_sync: two local backwards, then a synced one, reduce the accumulated sum
(xa, ya), (xb, yb), (xc, yc) = batches((6,), 3)
ref = mlp()
for x, y in ((xa, ya), (xb, yb), (xc, yc)):
    loss_fn(ref(x), y).backward()
model = DDP(mlp(), bucket_cap_mb=0.0005)
with model.no_sync():
    loss_fn(model(half(xa)), half(ya)).backward()
    local = xpnet.to_numpy(model.module[0].weight.grad.data).copy()
    loss_fn(model(half(xb)), half(yb)).backward()
gathered = [None, None]
dist.all_gather_object(gathered, local.tolist())
assert not np.allclose(gathered[0], gathered[1])            # no communication inside no_sync
loss_fn(model(half(xc)), half(yc)).backward()
for p, q in zip(model.module.parameters(), ref.parameters()):
    close(p.grad, q.grad, "no_sync accumulation")


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        xpnet.manual_seed(3)
        self.fc1 = nn.Linear(6, 8)
        self.extra = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 3)
        self.unused = nn.Linear(8, 3)
        self.double()

    def forward(self, x, use_extra=False):
        h = self.fc1(x).tanh()
        if use_extra:
            h = self.extra(h).tanh()
        return self.fc2(h)


# find_unused_parameters=True: `extra` runs on rank 0 only, `unused` nowhere
x, y = batches((6,), 1)[0]
ref = Branchy()
loss = (loss_fn(ref(x[:4], use_extra=True), y[:4]) + loss_fn(ref(x[4:]), y[4:])) / 2
loss.backward()
for cap in (25, 0.0002):
    model = DDP(Branchy(), find_unused_parameters=True, bucket_cap_mb=cap)
    loss_fn(model(half(x), use_extra=(r == 0)), half(y)).backward()
    for (name, p), q in zip(model.module.named_parameters(), ref.parameters()):
        if name.startswith("unused"):
            assert p.grad is None and q.grad is None, name
        else:
            close(p.grad, q.grad, ("find_unused", cap, name))

# find_unused_parameters=False: the end of backward names the parameters without a gradient
model = DDP(Branchy(), bucket_cap_mb=0.0002)
try:
    loss_fn(model(half(x)), half(y)).backward()
    raise AssertionError("no error for unused parameters")
except RuntimeError as exc:
    text = str(exc)
    assert "\\n" not in text and "extra.weight" in text and "unused.bias" in text, text
    assert "find_unused_parameters=True" in text, text
# the ranks stay matched: a later step of another model works
model = DDP(mlp(), bucket_cap_mb=0.0005)
loss_fn(model(half(xa)), half(ya)).backward()

# broadcast_buffers: rank 0's running statistics reach every rank before the next forward
for flag in (True, False):
    xpnet.manual_seed(0)
    model = DDP(nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4)).double(), broadcast_buffers=flag)
    model(half(xa))                                  # local batch statistics: the ranks now differ
    stats = [None, None]
    dist.all_gather_object(stats, xpnet.to_numpy(model.module[1].running_mean.data).tolist())
    rank0 = stats[0]
    assert not np.allclose(stats[0], stats[1])
    model.eval()
    model(half(xa))                                  # eval: no update, after the broadcast (if any)
    dist.all_gather_object(stats, xpnet.to_numpy(model.module[1].running_mean.data).tolist())
    assert np.allclose(stats[0], stats[1]) == flag and np.allclose(stats[0], rank0), (flag, stats)

# different models on the ranks: one line naming the difference and the ranks, on every rank
for other in (lambda: nn.Linear(6, 5 if r == 1 else 4),
              lambda: nn.Sequential(nn.Linear(6, 4), *([nn.Linear(4, 2)] if r == 1 else []))):
    try:
        DDP(other())
        raise AssertionError("no error for different models")
    except ValueError as exc:
        text = str(exc)
        assert "\\n" not in text and "rank 0" in text and "rank 1" in text, text
        print(f"rank {r}: {text}")
print(f"rank {r} ok")
"""


def _check(result):
    code, out, err = result
    assert code == 0, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert "rank 0 ok" in out and "rank 1 ok" in out, out + err
    return out


def test_ddp_training_equals_single_process(mpirun):
    _check(mpirun(TRAINING, timeout=90))


def test_ddp_no_sync_unused_parameters_and_model_mismatch(mpirun):
    out = _check(mpirun(NO_SYNC_UNUSED_ERRORS, timeout=90))
    assert "parameter 'weight' has shape (4, 6) on rank 0 but (5, 6) on rank 1" in out
    assert "rank 0 has 2 parameters but rank 1 has 4" in out


def test_model_mismatch_messages():
    a = {"parameter": [("fc.weight", (4, 3), "float32")], "buffer": []}
    assert model_mismatch([a, a, a]) is None
    b = {"parameter": [("fc.weight", (4, 3), "float64")], "buffer": []}
    assert model_mismatch([a, a, b]) == "parameter 'fc.weight' has dtype float32 on rank 0 but float64 on rank 2"
    c = {"parameter": [("fc.weight", (4, 3), "float32")], "buffer": [("bn.running_mean", (4,), "float32")]}
    assert model_mismatch([a, c]) == ("rank 0 has 0 buffers but rank 1 has 1 "
                                      "(buffer 'bn.running_mean' exists on rank 1 only)")
    d = {"parameter": [("head.weight", (4, 3), "float32")], "buffer": []}
    assert model_mismatch([a, d]) == "parameter #0 is 'fc.weight' on rank 0 but 'head.weight' on rank 1"


@pytest.mark.skipif(dist.is_initialized(), reason="a process group is already running in this process")
def test_ddp_needs_a_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedDataParallel(nn.Linear(2, 2))
    assert xpnet.nn.parallel.DistributedDataParallel is DistributedDataParallel


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
