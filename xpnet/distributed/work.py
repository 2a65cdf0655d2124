"""``ReduceOp`` and ``Work``: the reduction names and the handle an ``async_op=True`` collective returns.

A ``Work`` holds what the engine started (an MPI request, or a CUDA event for NCCL) and a
``finish`` step that runs once, when the operation is known to be done: it divides for AVG,
casts back from the float32 used for float16/bfloat16, and writes the result into the tensor's
array. ``wait()`` blocks until then; ``is_completed()`` asks without blocking (and, when the
answer is yes, has already written the result).
"""

from __future__ import annotations

import enum
import time


class ReduceOp(enum.Enum):
    """``torch.distributed.ReduceOp``'s names. AVG is SUM followed by a division by the world size."""

    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MAX = "max"
    MIN = "min"

    def __repr__(self):
        return f"ReduceOp.{self.name}"


def reduce_op(op) -> ReduceOp:
    """``op`` as a ReduceOp; its name (``"sum"``, ``"AVG"``) is accepted too."""
    if isinstance(op, ReduceOp):
        return op
    if isinstance(op, str) and op.upper() in ReduceOp.__members__:
        return ReduceOp[op.upper()]
    raise ValueError(f"xpnet.distributed: op must be a ReduceOp (SUM, AVG, PRODUCT, MAX, MIN), got {op!r}")


class Work:
    """The handle of an asynchronous collective (``torch.distributed.Work``'s ``wait``/``is_completed``).

    ``test()`` answers whether the engine's part is done without blocking, ``block(timeout)``
    waits for it (raising ``TimeoutError`` after ``timeout`` seconds when one is given), and
    ``finish()`` writes the result where it belongs. Engines build one with those three.
    """

    def __init__(self, name, test, block, finish=None, timeout=None):
        self._name = name
        self._test = test
        self._block = block
        self._finish = finish
        self._timeout = timeout
        self._done = False
        self._exception = None

    def is_completed(self) -> bool:
        """Whether the collective has finished (then its result is already in the tensor)."""
        if not self._done and self._test():
            self._complete()
        return self._done

    def wait(self, timeout=None) -> bool:
        """Block until the collective has finished and its result is in the tensor; returns True.

        ``timeout`` (seconds or a ``timedelta``; default: the process group's) raises
        ``TimeoutError`` if the other ranks have not joined by then (the collective stays pending).
        """
        if self._exception is not None:
            raise self._exception
        if not self._done:
            limit = _seconds(timeout if timeout is not None else self._timeout)
            if limit is None:
                self._block()
            else:
                _poll(self._test, limit, self._name)
            self._complete()
        return True

    def _complete(self):
        self._done = True
        if self._finish is not None:
            finish, self._finish = self._finish, None
            try:
                finish()
            except BaseException as exc:  # noqa: BLE001 -- raised again by every wait()
                self._exception = exc
                raise

    def exception(self):
        return self._exception

    def __repr__(self):
        return f"Work({self._name}, completed={self._done})"


def _seconds(timeout):
    if timeout is None:
        return None
    seconds = timeout.total_seconds() if hasattr(timeout, "total_seconds") else float(timeout)
    if seconds < 0:
        raise ValueError(f"xpnet.distributed: timeout must be non-negative, got {timeout!r}")
    return seconds


def _poll(test, limit, name):
    """Call ``test()`` until it says done, sleeping a little longer each time (up to 1 ms)."""
    deadline = time.monotonic() + limit
    pause = 0.0
    while not test():
        if time.monotonic() > deadline:
            raise TimeoutError(f"xpnet.distributed.{name}: the other ranks did not join within {limit:g} s")
        time.sleep(pause)
        pause = min(0.001, pause * 2 or 1e-5)
