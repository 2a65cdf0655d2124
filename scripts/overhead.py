"""Per-operation autodiff overhead: a 1-element add, forward + backward, against the raw array add.

    python scripts/overhead.py [--backend numpy] [--repeat 20000]

Prints microseconds per iteration for: the raw namespace add; xpnet forward only (no graph, under
no_grad); forward recording the graph; forward + backward of ``a + b`` seeded with a one-element
gradient (leaf gradients reset each time); and the overhead of that over the raw add. Each figure
is the best of many short rounds of thread CPU time, which filters out other processes sharing
the CPU.
"""

from __future__ import annotations

import argparse
import time

import xpnet


def _best(fn, repeat: int, rounds: int = 40) -> float:
    """Best-of-``rounds`` mean seconds per call, in this thread's CPU time: time spent descheduled
    while other processes share the CPU does not count, and the minimum filters the rest."""
    best = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(repeat):
            fn()
        best = min(best, (time.thread_time() - start) / repeat)
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--repeat", type=int, default=1000, help="iterations per round")
    args = parser.parse_args(argv)

    backend = xpnet.get_backend(args.backend)
    xp = backend.xp
    with xpnet.use_backend(backend):
        raw_a = xp.ones((1,), dtype=xp.float64, device=backend.device)
        raw_b = xp.ones((1,), dtype=xp.float64, device=backend.device)
        a = xpnet.tensor(raw_a, requires_grad=True)
        b = xpnet.tensor(raw_b, requires_grad=True)
        seed = xp.ones((1,), dtype=xp.float64, device=backend.device)

        def raw_add():
            return raw_a + raw_b

        def no_grad_add():
            with xpnet.no_grad():
                return a + b

        def graph_add():
            return a + b

        def add_backward():
            a.grad = None
            b.grad = None
            (a + b).backward(seed)

        t_raw = _best(raw_add, args.repeat)
        t_nograd = _best(no_grad_add, args.repeat)
        t_graph = _best(graph_add, args.repeat)
        t_fb = _best(add_backward, args.repeat)

    us = 1e6
    print(f"backend {backend}; 1-element float64 add; best of 40 rounds x {args.repeat} iterations, thread CPU time")
    print(f"  raw xp add                        {t_raw * us:8.2f} us")
    print(f"  xpnet add, no_grad (forward only) {t_nograd * us:8.2f} us")
    print(f"  xpnet add recording the graph     {t_graph * us:8.2f} us")
    print(f"  xpnet add forward + backward      {t_fb * us:8.2f} us")
    print(f"  overhead of forward + backward    {(t_fb - t_raw) * us:8.2f} us "
          f"({t_fb / t_raw:.0f}x the raw add)")


if __name__ == "__main__":
    main()
