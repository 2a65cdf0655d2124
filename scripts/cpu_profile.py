"""Where an xpnet training step goes on the CPU, compiled kernels against pure NumPy.

    python scripts/cpu_profile.py [--workload lenet5] [--steps 25] [--rounds 6]

Runs the benchmark's workload (see xpnet/bench.py) in one process, alternating rounds with the
compiled kernels on and off (``native.set_enabled``), and prints the step time and the
time inside each NumPy-backend kernel, in ms per step. Alternating rounds in one process keeps machine
noise out of the comparison. Kernel times are wall time on the calling thread (a kernel's workers
run inside it).
"""

from __future__ import annotations

import argparse
import collections
import time

KERNELS = ["conv2d_forward", "conv2d_backward", "max_pool2d_forward", "max_pool2d_backward", "relu_forward",
           "relu_backward", "batch_norm_forward", "batch_norm_backward", "matmul", "sgd_step",
           "cross_entropy_forward", "cross_entropy_backward"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="lenet5")
    parser.add_argument("--steps", type=int, default=25, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of each setting")
    args = parser.parse_args(argv)

    from xpnet.backends import kernels
    from xpnet.backends.numpy import native
    from xpnet.bench import WORKLOADS, _Runner

    if args.workload not in WORKLOADS:
        parser.error(f"--workload: one of {', '.join(WORKLOADS)}")
    spent = collections.defaultdict(float)
    setting = ["warm-up"]

    def timed(name, fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[(setting[0], name)] += time.perf_counter() - start
        return wrapper

    for name in KERNELS:  # the registry itself (Backend.kernel reads it directly)
        key = ("numpy", getattr(kernels, name.upper()))
        fn = kernels._REGISTRY.get(key)
        if fn is not None:
            kernels._REGISTRY[key] = timed(name, fn)
    runner = _Runner("xpnet", args.workload, "cpu")
    settings = {"compiled": True, "numpy": False}
    for _ in range(args.rounds):
        for label, flag in settings.items():
            native.set_enabled(flag)
            setting[0] = "warm-up"
            runner.step()
            setting[0] = label
            start = time.perf_counter()
            for _ in range(args.steps):
                runner.step()
            spent[(label, "step")] += time.perf_counter() - start
    native.set_enabled(None)
    per_step = 1e3 / (args.rounds * args.steps)
    print(f"{args.workload}: ms per step, {args.rounds} rounds x {args.steps} steps each; "
          f"compiled kernels: {native.status()}")
    print(f"{'':24s}{'compiled':>10s}{'numpy':>10s}")
    for name in ["step"] + KERNELS:
        a, b = spent.get(("compiled", name)), spent.get(("numpy", name))
        if a is not None or b is not None:
            print(f"{name:24s}{(a or 0) * per_step:10.2f}{(b or 0) * per_step:10.2f}")


if __name__ == "__main__":
    main()
