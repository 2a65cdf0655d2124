"""DistributedDataParallel on CPU: 1 rank x 2 threads against 2 ranks x 1 thread (mpiexec -n 2).

    python scripts/bench_ddp.py [--model vgg_small] [--steps 10] [--warmup 2] [--batch 64]

Launches both configurations itself (a subprocess each; the 2-rank one under ``mpiexec -n 2``) and
prints a table: images/s over the timed steps, and, for the 2-rank run, the share of each step spent
in DDP's communication -- the time inside ``_launch`` (flattening a bucket and starting its async
all-reduce, during backward) plus the end-of-backward callback ``_finish_backward`` (waits for every
bucket's Work and writes the averaged gradients back). It also times an all_reduce of the whole
gradient (same bytes) alone, outside any step. Global batch ``--batch`` (split over the ranks), SGD
momentum 0.9, float32, the model from ``xpnet.models.create(..., num_classes=10, in_channels=3,
input_size=32)`` on random CIFAR-shaped inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    import numpy as np

    import xpnet
    from xpnet import models, nn, optim

    world = int(os.environ.get("PMI_SIZE", os.environ.get("OMPI_COMM_WORLD_SIZE", "1")))
    rank = 0
    if world > 1:
        import xpnet.distributed as dist
        from xpnet.nn.parallel import DistributedDataParallel as DDP

        dist.init_process_group(backend="mpi")
        rank, world = dist.get_rank(), dist.get_world_size()
    xpnet.manual_seed(0)
    model = models.create(args.model, num_classes=10, in_channels=3, input_size=32)
    params = sum(int(np.prod(p.shape)) for p in model.parameters())
    comm = {"launch": 0.0, "finish": 0.0}
    if world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DDP(model)
        launch, finish = model._launch, model._finish_backward

        def timed_launch(bucket):
            t = time.perf_counter()
            launch(bucket)
            comm["launch"] += time.perf_counter() - t

        def timed_finish():
            t = time.perf_counter()
            finish()
            comm["finish"] += time.perf_counter() - t

        model._launch, model._finish_backward = timed_launch, timed_finish
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    per_rank = args.batch // world
    gen = np.random.default_rng(rank)
    x = xpnet.tensor(gen.standard_normal((per_rank, 3, 32, 32)).astype(np.float32))
    y = xpnet.tensor(gen.integers(0, 10, per_rank))

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    comm["launch"] = comm["finish"] = 0.0
    if world > 1:
        dist.barrier()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    result = {"world": world, "threads": os.environ.get("XPNET_NUM_THREADS"), "params": params,
              "step_s": sum(times) / len(times), "images_s": args.batch * len(times) / sum(times),
              "comm_s": (comm["launch"] + comm["finish"]) / len(times),
              "launch_s": comm["launch"] / len(times), "finish_s": comm["finish"] / len(times)}
    if world > 1:  # the whole gradient's bytes in one all_reduce, alone
        flat = xpnet.tensor(np.ones(params, dtype=np.float32))
        dist.all_reduce(flat, op=dist.ReduceOp.AVG)
        dist.barrier()
        t = time.perf_counter()
        for _ in range(5):
            dist.all_reduce(flat, op=dist.ReduceOp.AVG)
        result["allreduce_alone_s"] = (time.perf_counter() - t) / 5
        # the slowest rank sets the step: report rank 0's numbers next to the max over ranks
        both = [None] * world
        dist.all_gather_object(both, result["step_s"])
        result["step_s_max_rank"] = max(both)
    if rank == 0:
        print("RESULT " + json.dumps(result), flush=True)


def launch(args, ranks: int, threads: int) -> dict:
    env = dict(os.environ, XPNET_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, __file__, "--worker", "--model", args.model, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch", str(args.batch)]
    if ranks > 1:
        beside = Path(sys.executable).with_name("mpiexec")
        cmd = [str(beside) if beside.exists() else shutil.which("mpiexec"), "-n", str(ranks)] + cmd
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg_small")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    one = launch(args, 1, 2)
    two = launch(args, 2, 1)
    mb = one["params"] * 4 / 1e6
    print(f"{args.model}: {one['params']:,} parameters ({mb:.2f} MB float32 gradient), global batch "
          f"{args.batch}, SGD momentum 0.9, float32, {args.steps} timed steps after {args.warmup} warm-up, "
          f"{os.cpu_count()} CPUs")
    print(f"{'config':<24}{'step ms':>10}{'images/s':>10}{'comm ms/step':>14}{'comm share':>12}")
    print(f"{'1 rank x 2 threads':<24}{one['step_s'] * 1e3:>10.1f}{one['images_s']:>10.1f}{'-':>14}{'-':>12}")
    print(f"{'2 ranks x 1 thread':<24}{two['step_s'] * 1e3:>10.1f}{two['images_s']:>10.1f}"
          f"{two['comm_s'] * 1e3:>14.1f}{two['comm_s'] / two['step_s']:>12.1%}")
    print(f"  comm = bucket launch (flatten + start async all_reduce, in backward) "
          f"{two['launch_s'] * 1e3:.1f} ms + end-of-backward wait/write-back {two['finish_s'] * 1e3:.1f} ms; "
          f"slowest rank's step {two['step_s_max_rank'] * 1e3:.1f} ms")
    print(f"  allreduce of {mb:.2f} MB alone: {two['allreduce_alone_s'] * 1e3:.1f} ms")
    print(f"ratio 2-rank / 1-rank throughput: {two['images_s'] / one['images_s']:.2f}")


if __name__ == "__main__":
    main()
