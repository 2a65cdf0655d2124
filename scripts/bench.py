#!/usr/bin/env python
"""Benchmark xpnet against PyTorch in one process: ``python scripts/bench.py [--workloads mlp,lenet5]``;
``python scripts/bench.py --small`` for the small-model set in microseconds per step (also
``xpnet bench --small``).

On a GPU: ``XPNET_BACKEND=cupy python scripts/bench.py``. See ``xpnet/bench.py`` for the method.
"""

import sys

from xpnet.bench import main

if __name__ == "__main__":
    sys.exit(main())
