"""Training callbacks: early stopping and snapshot ensembles."""

from __future__ import annotations

import math

from ..backends import to_numpy


def copy_state(model) -> dict:
    """A host copy of a model's state_dict (safe from later in-place updates)."""
    return {k: to_numpy(v).copy() for k, v in model.state_dict().items()}


class Callback:
    """Hooks called by ``fit``; return True from ``on_epoch_end`` to stop training."""

    def on_train_begin(self, trainer):
        pass

    def on_epoch_end(self, trainer, epoch: int, record: dict) -> bool:
        return False

    def on_train_end(self, trainer):
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the model gets back the weights of its best epoch at the end.
    """

    def __init__(self, patience=5, monitor="val_loss", mode=None, min_delta=0.0, restore_best=True):
        self.patience = patience
        self.monitor = monitor
        self.mode = mode or ("max" if "acc" in monitor else "min")
        self.min_delta = min_delta
        self.restore_best = restore_best
        self.best = None
        self.best_epoch = None
        self.best_state = None
        self.wait = 0
        self.stopped_epoch = None

    def _improved(self, value):
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, trainer, epoch, record):
        value = record.get(self.monitor)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise ValueError(f"EarlyStopping: metric {self.monitor!r} is not in the epoch record "
                             f"(have {sorted(k for k, v in record.items() if v is not None)})")
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_state = copy_state(trainer.model)
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, trainer):
        if self.restore_best and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)


class SnapshotEnsemble(Callback):
    """Snapshot ensembles (Huang et al., 2017): with CosineAnnealingWarmRestarts, keep the weights
    at the end of every cosine cycle (the learning-rate minima) and average the snapshots'
    softmax outputs at test time (``ensemble_predict``).

    ``cycle_length`` is the first cycle's length in epochs (the scheduler's T_0) and ``t_mult`` its
    growth factor.
    """

    def __init__(self, cycle_length: int, t_mult: int = 1, max_snapshots: int | None = None):
        self.cycle_length = cycle_length
        self.t_mult = t_mult
        self.max_snapshots = max_snapshots
        self.snapshots: list = []
        self._next_end = cycle_length
        self._current = cycle_length

    def on_epoch_end(self, trainer, epoch, record):
        if epoch + 1 == self._next_end:
            self.snapshots.append(copy_state(trainer.model))
            if self.max_snapshots and len(self.snapshots) > self.max_snapshots:
                self.snapshots.pop(0)
            self._current *= self.t_mult
            self._next_end += self._current
        return False
