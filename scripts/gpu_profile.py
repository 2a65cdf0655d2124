#!/usr/bin/env python
"""Where a training step's time goes on the GPU: ``XPNET_BACKEND=cupy python scripts/gpu_profile.py``.

For each workload of xpnet/bench.py: the host time to issue one step against the step's wall time
(issue ≈ wall means the step is bound by Python and launch overhead, not by the GPU); the device
time of every Function's forward and backward and of the optimizer step, each timed with a
synchronize on either side (so nested ops count twice and launch latency is included: a map of
where time goes, not a sum to the step); and the top CUDA kernels of the PyTorch twin from
torch.profiler. ``--tf32`` compares TF32 on and off for both frameworks.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import sys
import time


def _timed_functions(sync):
    """Wrap Function.apply and every subclass's backward with synchronised timers."""
    from xpnet.autodiff import function as fmod

    acc = collections.defaultdict(float)
    calls = collections.Counter()
    original_apply = fmod.Function.apply.__func__

    def apply(cls, *args, **config):
        sync()
        t0 = time.perf_counter()
        out = original_apply(cls, *args, **config)
        sync()
        acc[cls.__name__ + ".fwd"] += time.perf_counter() - t0
        calls[cls.__name__ + ".fwd"] += 1
        return out

    def subclasses(c):
        for s in c.__subclasses__():
            yield s
            yield from subclasses(s)

    restore = [(fmod.Function, "apply", fmod.Function.__dict__["apply"])]
    fmod.Function.apply = classmethod(apply)
    for cls in set(subclasses(fmod.Function)):
        if "backward" not in cls.__dict__:
            continue
        raw = cls.__dict__["backward"]
        fn = raw.__func__ if isinstance(raw, staticmethod) else raw
        restore.append((cls, "backward", raw))

        def backward(ctx, *grads, _fn=fn, _name=cls.__name__ + ".bwd"):
            sync()
            t0 = time.perf_counter()
            out = _fn(ctx, *grads)
            sync()
            acc[_name] += time.perf_counter() - t0
            calls[_name] += 1
            return out

        setattr(cls, "backward", staticmethod(backward))

    def undo():
        for owner, name, value in restore:
            setattr(owner, name, value)

    return acc, calls, undo


def _step_times(runner, steps):
    runner.sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        runner.step()
    issued = time.perf_counter() - t0
    runner.sync()
    total = time.perf_counter() - t0
    return 1e3 * issued / steps, 1e3 * total / steps


def profile_xpnet(name, steps, out):
    from xpnet.bench import _Runner

    r = _Runner("xpnet", name, "gpu")
    for _ in range(3):
        r.step()
    issue, wall = _step_times(r, steps)
    print(f"[xpnet {name}] issue {issue:.2f} ms/step, wall {wall:.2f} ms/step", file=out)
    acc, calls, undo = _timed_functions(r.sync)
    try:
        opt_time = 0.0
        for _ in range(steps):
            o = r.model(r.x)
            loss = r.loss_fn(o, r.y)
            r.opt.zero_grad()
            loss.backward()
            r.sync()
            t0 = time.perf_counter()
            r.opt.step()
            r.sync()
            opt_time += time.perf_counter() - t0
    finally:
        undo()
    acc["optimizer.step"] = opt_time
    calls["optimizer.step"] = steps
    print(f"  {'op':28s} {'ms/step':>8s} {'calls/step':>10s}", file=out)
    for op, t in sorted(acc.items(), key=lambda kv: -kv[1])[:18]:
        print(f"  {op:28s} {1e3 * t / steps:8.2f} {calls[op] / steps:10.1f}", file=out)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        r.step()
    r.sync()
    prof.disable()
    stats = pstats.Stats(prof, stream=out)
    print(f"  host profile, {steps} steps (tottime):", file=out)
    stats.sort_stats("tottime").print_stats(14)


def profile_torch(name, steps, out):
    import torch
    from torch.profiler import ProfilerActivity, profile

    from xpnet.bench import _Runner

    r = _Runner("torch", name, "gpu")
    for _ in range(3):
        r.step()
    issue, wall = _step_times(r, steps)
    print(f"[torch {name}] issue {issue:.2f} ms/step, wall {wall:.2f} ms/step", file=out)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            r.step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=60),
          file=out)


def tf32_compare(name, steps, out):
    import torch

    import xpnet
    from xpnet.bench import _Runner

    for mode in (False, True):
        xpnet.cuda.set_tf32(mode)
        torch.backends.cuda.matmul.allow_tf32 = mode
        torch.backends.cudnn.allow_tf32 = mode
        res = {}
        for fw in ("xpnet", "torch"):
            r = _Runner(fw, name, "gpu")
            for _ in range(3):
                r.step()
            res[fw] = _step_times(r, steps)[1]
        print(f"[tf32={mode} {name}] xpnet {res['xpnet']:.2f} ms/step  torch {res['torch']:.2f} ms/step  "
              f"ratio {res['torch'] / res['xpnet']:.2f}", file=out)
    xpnet.cuda.set_tf32(False)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default="mlp,vgg16_cifar,alexnet_227")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--tf32", action="store_true")
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args(argv)
    import xpnet

    if xpnet.get_backend().name != "cupy":
        print("gpu_profile: run with XPNET_BACKEND=cupy", file=sys.stderr)
        return 2
    for name in args.workloads.split(","):
        profile_xpnet(name, args.steps, sys.stdout)
        if not args.no_torch:
            profile_torch(name, args.steps, sys.stdout)
        if args.tf32:
            tf32_compare(name, args.steps, sys.stdout)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
