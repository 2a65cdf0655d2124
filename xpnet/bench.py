"""``xpnet bench`` / ``scripts/bench.py``: training-step throughput of xpnet against PyTorch.

Both frameworks run in this one process on identical architectures, weights, batches and
optimizer (SGD, momentum 0.9), float32. After warm-up, rounds alternate between the two so that
machine noise hits both alike; each round runs one untimed step (it absorbs the switch: this
framework's threads waking up, the other's BLAS/OpenMP threads still spinning) and then times
``steps`` full training steps (forward, loss, backward, optimizer step), by default as many as
make a round last ``--min-round`` seconds, so that each figure is a steady-state speed. Printed: median images/s of each, the ratio xpnet/PyTorch, and peak
memory (on CPU the resident-set high-water of a child process that runs only that framework's
workload; on GPU the CuPy pool high-water against torch.cuda.max_memory_allocated). JSON goes to
``--json``.

``--small`` runs the small-model set instead (three MLPs on 64 features, LeNet-5 at batch 16, a
two-convolution net on 16x16x3), where per-step overhead rather than arithmetic decides: it prints
microseconds per step of each and the speed ratio torch us / xpnet us (> 1: xpnet faster), with
shorter rounds (``--min-round`` 0.25 s, 9 of them) so that the set takes a minute or two on two cores.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

# name -> (layer spec, input shape (C, H, W) or (features,), batch size, GPU-only)
# spec items: ("conv", out, k, pad) ("bn",) ("relu",) ("pool", k) ("flatten",) ("linear", out)
LARGE_WORKLOADS = {
    "mlp": ([("flatten",), ("linear", 1024), ("relu",), ("linear", 1024), ("relu",), ("linear", 10)],
            (1, 28, 28), 256, False),
    "lenet5": ([("conv", 6, 5, 2), ("relu",), ("pool", 2), ("conv", 16, 5, 0), ("relu",), ("pool", 2),
                ("flatten",), ("linear", 120), ("relu",), ("linear", 84), ("relu",), ("linear", 10)],
               (1, 28, 28), 128, False),
    "vgg_cifar": ([("conv", 64, 3, 1), ("relu",), ("conv", 64, 3, 1), ("relu",), ("pool", 2),
                   ("conv", 128, 3, 1), ("relu",), ("conv", 128, 3, 1), ("relu",), ("pool", 2),
                   ("conv", 256, 3, 1), ("relu",), ("conv", 256, 3, 1), ("relu",), ("pool", 2),
                   ("flatten",), ("linear", 10)], (3, 32, 32), 64, False),
    "vgg_cifar_bn": ([("conv", 64, 3, 1), ("bn",), ("relu",), ("conv", 64, 3, 1), ("bn",), ("relu",), ("pool", 2),
                      ("conv", 128, 3, 1), ("bn",), ("relu",), ("conv", 128, 3, 1), ("bn",), ("relu",), ("pool", 2),
                      ("conv", 256, 3, 1), ("bn",), ("relu",), ("conv", 256, 3, 1), ("bn",), ("relu",), ("pool", 2),
                      ("flatten",), ("linear", 10)], (3, 32, 32), 64, False),
    "alexnet_cifar": ("model:alexnet", (3, 32, 32), 64, False),
    "vgg16_cifar": ("model:vgg16", (3, 32, 32), 128, True),
    "alexnet_227": ("model:alexnet", (3, 227, 227), 128, True),
}
# ``--small``: models small enough that the per-step overhead of the framework shows
SMALL_WORKLOADS = {
    "mlp_64_32_b8": ([("linear", 32), ("relu",), ("linear", 32), ("relu",), ("linear", 10)], (64,), 8, False),
    "mlp_64_128_b64": ([("linear", 128), ("relu",), ("linear", 128), ("relu",), ("linear", 10)], (64,), 64, False),
    "mlp_64_512_b256": ([("linear", 512), ("relu",), ("linear", 512), ("relu",), ("linear", 10)], (64,), 256,
                        False),
    "lenet5_b16": ("model:lenet5", (1, 28, 28), 16, False),
    "convnet_16px_b64": ([("conv", 16, 3, 1), ("relu",), ("pool", 2), ("conv", 32, 3, 1), ("relu",), ("pool", 2),
                          ("flatten",), ("linear", 10)], (3, 16, 16), 64, False),
}
WORKLOADS = {**LARGE_WORKLOADS, **SMALL_WORKLOADS}
CPU_WORKLOADS = [name for name, w in LARGE_WORKLOADS.items() if not w[3]]
GPU_WORKLOADS = list(LARGE_WORKLOADS)
SMALL = list(SMALL_WORKLOADS)


def _xpnet_model(spec, in_shape):
    import xpnet
    from xpnet import nn

    if isinstance(spec, str):
        return xpnet.models.create(spec.split(":", 1)[1], num_classes=10, in_channels=in_shape[0],
                                   input_size=in_shape[1])
    if len(in_shape) == 1:  # flat features: the spec starts with a Linear
        layers, channels, side, width = [], None, None, in_shape[0]
    else:
        layers, channels, side, width = [], in_shape[0], in_shape[1], None
    for item in spec:
        kind = item[0]
        if kind == "conv":
            _, out, k, pad = item
            layers.append(nn.Conv2d(channels, out, k, padding=pad, bias=True))
            channels, side = out, side + 2 * pad - k + 1
        elif kind == "bn":
            layers.append(nn.BatchNorm2d(channels))
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "pool":
            layers.append(nn.MaxPool2d(item[1]))
            side //= item[1]
        elif kind == "flatten":
            layers.append(nn.Flatten())
            width = channels * side * side
        elif kind == "linear":
            layers.append(nn.Linear(width, item[1]))
            width = item[1]
    return nn.Sequential(*layers)


def _torch_twin(model):
    """A torch.nn model with the same layers and the same weights as an xpnet Sequential."""
    import torch
    from torch import nn as tnn

    from xpnet import nn

    def convert(m):
        if isinstance(m, nn.Sequential):
            return tnn.Sequential(*[convert(c) for c in m.children()])
        name = type(m).__name__
        if name == "Conv2d":
            return tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                              m.dilation, m.groups, m.bias is not None)
        if name == "Linear":
            return tnn.Linear(m.in_features, m.out_features, m.bias is not None)
        if name == "BatchNorm2d":
            return tnn.BatchNorm2d(m.num_features, m.eps, m.momentum)
        if name == "MaxPool2d":
            return tnn.MaxPool2d(m.kernel_size, m.stride, m.padding)
        if name == "LocalResponseNorm":
            return tnn.LocalResponseNorm(m.size, m.alpha, m.beta, m.k)
        if name == "AdaptiveAvgPool2d":
            return tnn.AdaptiveAvgPool2d(m.output_size)
        simple = {"ReLU": tnn.ReLU, "Flatten": tnn.Flatten, "Identity": tnn.Identity}
        if name in simple:
            return simple[name]()
        if name == "Dropout":
            return tnn.Dropout(m.p)
        raise TypeError(f"bench: no torch twin for {name}")

    twin = convert(model)
    import xpnet

    state = {k: torch.from_numpy(xpnet.to_numpy(v).copy()) for k, v in model.state_dict().items()}
    twin.load_state_dict(state)
    return twin


class _Runner:
    def __init__(self, framework, workload, device):
        import xpnet

        spec, in_shape, batch, _ = WORKLOADS[workload]
        self.framework, self.batch = framework, batch
        xpnet.manual_seed(0)
        backend = xpnet.get_backend()
        model = _xpnet_model(spec, in_shape)
        host_x = xpnet.to_numpy(backend.rng.normal((batch,) + tuple(in_shape), dtype="float32"))
        host_y = xpnet.to_numpy(backend.rng.integers(0, 10, (batch,)))
        if framework == "torch":
            import torch

            self.device = torch.device("cuda" if device == "gpu" else "cpu")
            self.model = _torch_twin(model).to(self.device).train()
            self.x = torch.from_numpy(host_x).to(self.device)
            self.y = torch.from_numpy(host_y).to(self.device)
            self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
            self.loss_fn = torch.nn.CrossEntropyLoss()
            self.sync = (lambda: torch.cuda.synchronize()) if device == "gpu" else (lambda: None)
        else:
            from xpnet import nn, optim

            self.model = model.train()
            self.x = xpnet.tensor(host_x)
            self.y = xpnet.tensor(host_y)
            self.opt = optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
            self.loss_fn = nn.CrossEntropyLoss()
            self.sync = backend.synchronize

    def step(self):
        out = self.model(self.x)
        loss = self.loss_fn(out, self.y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss

    def timed(self, steps, lead_in=1):
        """Images/s over ``steps`` steps, after ``lead_in`` untimed ones: the first step after the
        other framework's round pays for waking this one's threads and for the other's threads
        still spinning, which is not the steady-state speed of either."""
        for _ in range(lead_in):
            self.step()
        self.sync()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        self.sync()
        return self.batch * steps / (time.perf_counter() - start)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_probe(framework, workload, steps, device):
    """Print the peak resident set (MiB) above the post-import level while building the workload
    and running ``steps`` training steps; a sampling thread reads /proc/self/statm every 0.5 ms."""
    import gc
    import threading

    import torch  # noqa: F401  (both frameworks' imports belong to the baseline)

    gc.collect()
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    runner = _Runner(framework, workload, device)
    for _ in range(steps):
        runner.step()
    done.set()
    thread.join()
    peak[0] = max(peak[0], _rss_bytes())
    print((peak[0] - base) / 2**20)


def _peak_memory_child(framework, workload, steps, device):
    """Peak memory of one framework's workload, measured in a fresh process (see memory_probe)."""
    code = f"from xpnet.bench import memory_probe; memory_probe({framework!r}, {workload!r}, {steps}, {device!r})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"bench: memory run of {framework}/{workload} failed: {last}", file=sys.stderr)
        return None
    return float(out.stdout.strip().splitlines()[-1])


def _gpu_peak(runner, framework, steps):
    if framework == "torch":
        import torch

        torch.cuda.reset_peak_memory_stats()
        for _ in range(steps):
            runner.step()
        runner.sync()
        return torch.cuda.max_memory_allocated() / 2**20
    from . import cuda

    for _ in range(steps):
        runner.step()
    runner.sync()
    return cuda.memory_stats()["total_bytes"] / 2**20


def _set_precision(device, tf32):
    """The same float32 arithmetic for both frameworks on a GPU: strict float32 GEMMs and
    convolutions (PyTorch's default lets cuDNN convolutions use TF32), or TF32 for both."""
    if device != "gpu":
        return "float32"
    import torch

    import xpnet

    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    xpnet.cuda.set_tf32(tf32)
    return "tf32" if tf32 else "float32 (TF32 off in both)"


def _seconds_per_step(runner, probe=0.02):
    """One step's seconds: the median of single steps timed for ``probe`` seconds (one step of a big
    model; many of a small one, whose median ignores a step stalled by load elsewhere)."""
    times = []
    while sum(times) < probe:
        start = time.perf_counter()
        runner.step()
        runner.sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _steps_for(runners, min_round, max_steps=200, probes=1):
    """Steps per round so that the slower framework's round lasts about ``min_round`` seconds; each
    framework's step time is the least of ``probes`` probes, alternating between the frameworks."""
    per_step = {fw: math.inf for fw in runners}
    for _ in range(probes):
        for fw in runners:
            per_step[fw] = min(per_step[fw], _seconds_per_step(runners[fw]))
    slowest = max(per_step.values())
    return max(3, min(max_steps, math.ceil(min_round / max(slowest, 1e-6))))


def run(workloads, rounds=7, steps=None, warmup=2, device="cpu", memory=True, stream=None, tf32=False,
        settle=0.0, min_round=0.5, per_step=False, max_steps=200):
    """Time ``workloads``; ``per_step`` prints microseconds per step (and the speed ratio torch us /
    xpnet us, the same number as the images/s ratio) instead of images/s; ``max_steps`` caps the
    steps of a round."""
    import torch

    import xpnet

    stream = sys.stdout if stream is None else stream
    results = []
    precision = _set_precision(device, tf32)
    print(f"xpnet {xpnet.__version__} vs PyTorch {torch.__version__}  backend {xpnet.get_backend()}  "
          f"{_device_name(device)}  torch threads {torch.get_num_threads()}  {precision}", file=stream)
    speed_head = (f"{'xpnet us/step':>13s} {'torch us/step':>13s} {'speed':>6s}" if per_step
                  else f"{'xpnet img/s':>12s} {'torch img/s':>12s} {'ratio':>6s}")
    print(f"{'workload':16s} {'batch':>5s} {speed_head} "
          f"{'xpnet MiB':>10s} {'torch MiB':>10s} {'mem ratio':>9s}", file=stream, flush=True)
    for name in workloads:
        runners = {fw: _Runner(fw, name, device) for fw in ("xpnet", "torch")}
        for r in runners.values():
            for _ in range(warmup):
                r.step()
        speeds = {"xpnet": [], "torch": []}
        n_steps = steps if steps else _steps_for(runners, min_round, max_steps, probes=3 if per_step else 1)
        for _ in range(rounds):
            for fw in ("xpnet", "torch"):
                time.sleep(settle)
                speeds[fw].append(runners[fw].timed(n_steps))
        med = {fw: statistics.median(v) for fw, v in speeds.items()}
        mem = {"xpnet": None, "torch": None}
        if memory:
            if device == "gpu":
                mem = {fw: _gpu_peak(runners[fw], fw, 3) for fw in runners}
            else:
                del runners
                mem = {fw: _peak_memory_child(fw, name, warmup + 3, device) for fw in ("xpnet", "torch")}
        ratio = med["xpnet"] / med["torch"]
        mem_ratio = (mem["xpnet"] / mem["torch"]) if mem["xpnet"] and mem["torch"] else None
        batch = WORKLOADS[name][2]
        us = {fw: 1e6 * batch / med[fw] for fw in med}
        speed_cols = (f"{us['xpnet']:13.1f} {us['torch']:13.1f} {ratio:6.2f}" if per_step
                      else f"{med['xpnet']:12.1f} {med['torch']:12.1f} {ratio:6.2f}")
        print(f"{name:16s} {batch:5d} {speed_cols} "
              f"{mem['xpnet'] or float('nan'):10.1f} {mem['torch'] or float('nan'):10.1f} "
              f"{mem_ratio or float('nan'):9.2f}", file=stream, flush=True)
        results.append({"workload": name, "batch": batch, "steps_per_round": n_steps,
                        "xpnet_images_per_s": med["xpnet"],
                        "torch_images_per_s": med["torch"], "ratio": ratio,
                        "xpnet_us_per_step": us["xpnet"], "torch_us_per_step": us["torch"],
                        "xpnet_best_us_per_step": 1e6 * batch / max(speeds["xpnet"]),
                        "torch_best_us_per_step": 1e6 * batch / max(speeds["torch"]),
                        "xpnet_rounds": speeds["xpnet"],
                        "torch_rounds": speeds["torch"], "xpnet_peak_mib": mem["xpnet"],
                        "torch_peak_mib": mem["torch"], "memory_ratio": mem_ratio})
    return {"xpnet": xpnet.__version__, "torch": torch.__version__, "backend": str(xpnet.get_backend()),
            "machine": platform.platform(), "device": _device_name(device), "precision": precision,
            "cpu_count": os.cpu_count(), "results": results}


def _device_name(device):
    if device == "gpu":
        import torch

        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine()


def _add_arguments(parser):
    parser.add_argument("--workloads", default=None,
                        help=f"comma-separated subset of {', '.join(WORKLOADS)} (default: the CPU set "
                             f"{', '.join(CPU_WORKLOADS)}, or {', '.join(GPU_WORKLOADS)} on a GPU)")
    parser.add_argument("--small", action="store_true",
                        help=f"the small-model set ({', '.join(SMALL)}), in microseconds per step")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per framework (default 7; "
                        "9 with --small)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps timed per round (default: enough for --min-round seconds)")
    parser.add_argument("--min-round", type=float, default=None,
                        help="seconds a round lasts at least when --steps is not given (default 0.5; "
                             "0.25 with --small)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--settle", type=float, default=0.0, help="seconds of pause before each timed round")
    parser.add_argument("--tf32", action="store_true", help="GPU: let both frameworks use TF32 for float32 "
                        "GEMMs and convolutions (default: strict float32 in both)")
    parser.add_argument("--json", default="bench.json", help="where to write the results")


def _main_args(args) -> int:
    import xpnet

    try:
        import torch  # noqa: F401
    except ImportError:
        print("xpnet bench: PyTorch is needed for the comparison (pip install torch)", file=sys.stderr)
        return 2
    device = "gpu" if xpnet.get_backend().name == "cupy" else "cpu"
    if args.small and args.workloads:
        print("xpnet bench: --small selects the small set; give either it or --workloads", file=sys.stderr)
        return 2
    if args.small:
        names = list(SMALL)
    elif args.workloads:
        names = args.workloads.split(",")
    else:
        names = GPU_WORKLOADS if device == "gpu" else CPU_WORKLOADS
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        print(f"xpnet bench: unknown workload(s) {unknown}; choose from {list(WORKLOADS)}", file=sys.stderr)
        return 2
    small = all(n in SMALL_WORKLOADS for n in names)
    rounds = args.rounds if args.rounds is not None else (9 if small else 7)
    min_round = args.min_round if args.min_round is not None else (0.25 if small else 0.5)
    report = run(names, rounds, args.steps, args.warmup, device, memory=not args.no_memory, tf32=args.tf32,
                 settle=args.settle, min_round=min_round, per_step=small, max_steps=20000 if small else 200)
    with open(args.json, "w") as handle:
        json.dump(report, handle, indent=2)
    print(f"wrote {args.json}")
    return 0


def register_cli(sub):
    p = sub.add_parser("bench", help="training-step speed and memory against PyTorch, same process")
    _add_arguments(p)
    p.set_defaults(func=_main_args)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    return _main_args(parser.parse_args(argv))
