"""The training loop: ``fit``, ``evaluate``, ``predict`` and snapshot-ensemble prediction.

Host-side in one place: under a process group of several ranks, ``_sum_over_ranks`` imports NumPy
to send the epoch's metrics (Python floats) as one float64 host buffer through MPI; everything
else goes through the arrays' own namespace.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time

from array_api_compat import array_namespace

from ..autodiff import no_grad
from ..backends import unwrap
from .callbacks import copy_state
from .checkpoint import atomic_write_bytes, load_checkpoint, nonfinite_report, save_checkpoint
from .metrics import correct_count
from .progress import Progress

HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")


class TrainingDiverged(FloatingPointError):
    """The loss, the validation loss or the weights became NaN or infinite; training stopped and no
    checkpoint was written from the diverged state (the message names the one on disk, if any)."""


class TrainingTerminated(KeyboardInterrupt):
    """Raised in the main thread by a SIGTERM handler (``xpnet train`` installs one): ``fit`` saves
    an interrupted checkpoint exactly as for Ctrl-C."""


class History(dict):
    """Per-epoch records: ``history['val_acc'][-1]``; ``to_csv(path)`` writes them."""

    def __init__(self, data=None):
        super().__init__({k: [] for k in HISTORY_KEYS})
        if data:
            for k in HISTORY_KEYS:
                self[k] = list(data.get(k, []))
        self.interrupted = False
        self.stopped_early = False
        self.checkpoint_path = None
        self.signal = None  # 'SIGINT' or 'SIGTERM' when interrupted
        self.unsaved_reason = None  # why an interrupted run wrote no checkpoint

    def append(self, record: dict):
        for k in HISTORY_KEYS:
            self[k].append(record.get(k))

    def to_csv(self, path: str) -> str:
        """Write the records as CSV, atomically (temporary file + rename; a link at ``path`` is
        replaced, never followed)."""
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(HISTORY_KEYS)
        for row in zip(*(self[k] for k in HISTORY_KEYS)):
            writer.writerow(["" if v is None else v for v in row])
        atomic_write_bytes(path, text.getvalue().encode())
        return path


def _current_lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"]) if optimizer is not None else float("nan")


def _world():
    """(rank, world size) of the initialised ``xpnet.distributed`` process group, else (0, 1)."""
    import sys

    dist = sys.modules.get("xpnet.distributed")  # never import (or start) MPI for a plain run
    if dist is None or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _sum_over_ranks(values):
    """``values`` (floats) summed over the ranks of the process group (as they are with one process).
    Host-side on purpose: the metrics are Python floats, sent as one float64 NumPy buffer (MPI's
    host memory); a single-process run returns before importing anything."""
    if _world()[1] == 1:
        return [float(v) for v in values]
    import numpy as np

    import xpnet.distributed as dist

    buffer = np.asarray(values, dtype=np.float64)
    dist.all_reduce(buffer)
    return [float(v) for v in buffer]


def _unwrapped(model):
    """The module a DistributedDataParallel wraps (``ddp.module``), else ``model``."""
    from ..nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def evaluate(model, loader, loss_fn=None, max_batches=None):
    """(mean loss or None, accuracy) of ``model`` in eval mode over ``loader``.

    Under an initialised process group of several ranks the loss sums, correct counts and sample
    counts are summed over the ranks, so every rank returns the same numbers: right when each rank
    holds a disjoint shard of the set (``Subset(test, range(rank, len, world))``) and also when each
    holds the whole set (the means are then those of one copy). A DistributedDataParallel model is
    evaluated through ``model.module`` (no collective per batch, so shards may differ in length).
    """
    model = _unwrapped(model)
    was_training = model.training
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    with no_grad():
        for step, (xb, yb) in enumerate(loader):
            if max_batches is not None and step >= max_batches:
                break
            out = model(xb)
            n = yb.shape[0]
            if loss_fn is not None:
                total_loss += float(loss_fn(out, yb).item()) * n
            correct += correct_count(out.data, unwrap(yb))
            seen += n
    model.train(was_training)
    total_loss, correct, seen = _sum_over_ranks([total_loss, correct, seen])
    if seen == 0:
        return None, float("nan")
    return (total_loss / seen if loss_fn is not None else None), correct / seen


def predict(model, loader, probabilities=True):
    """Concatenated softmax outputs (or logits) of ``model`` over ``loader``, and the targets."""
    was_training = model.training
    model.eval()
    outs, targets = [], []
    with no_grad():
        for xb, yb in loader:
            out = model(xb).data
            if probabilities:
                xp = array_namespace(out)
                shifted = out - xp.max(out, axis=-1, keepdims=True)
                e = xp.exp(shifted)
                out = e / xp.sum(e, axis=-1, keepdims=True)
            outs.append(out)
            targets.append(unwrap(yb))
    model.train(was_training)
    xp = array_namespace(outs[0])
    return xp.concat(outs, axis=0), xp.concat(targets, axis=0)


def ensemble_predict(model, snapshots, loader):
    """Average the softmax outputs of each snapshot state over ``loader`` (snapshot ensembles).

    Every snapshot sees the same epoch of the loader (a shuffling loader is rewound with
    ``set_epoch``), so the rows line up. The model's own weights are restored afterwards.
    Returns (mean probabilities, targets).
    """
    original = copy_state(model)
    epoch = getattr(loader, "epoch", None)
    total, targets = None, None
    try:
        for state in snapshots:
            if epoch is not None and hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            model.load_state_dict(state)
            probs, targets = predict(model, loader)
            total = probs if total is None else total + probs
    finally:
        model.load_state_dict(original)
    return total / len(snapshots), targets


class Trainer:
    """What callbacks see: the model, optimizer, scheduler and the history so far."""

    def __init__(self, model, optimizer, scheduler, history):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.history = history


def _scheduler_interval(scheduler, interval):
    if interval is not None:
        if interval not in ("step", "epoch"):
            raise ValueError(f"fit: scheduler_interval must be 'step' or 'epoch', got {interval!r}")
        return interval
    return getattr(scheduler, "interval", "epoch")


# param-group entries a schedule owns: a rebuilt schedule keeps its own, not the checkpoint's
_SCHEDULE_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")


def _resume(resume, model, optimizer, scheduler, train_loader, epochs, steps_per_epoch, interval):
    """Restore a checkpoint for ``fit`` and rebuild the schedule at the saved position.

    A replayable schedule (``scheduler.replayable``: every LRScheduler except ReduceLROnPlateau) is not
    loaded from the file:
    the one passed in, built for this run's total, is stepped from its start to where the
    checkpoint stands (``epoch * steps_per_epoch`` steps per batch, ``epoch`` steps per epoch), so
    2 epochs + resume to 4 equals 4 epochs, and a larger total stretches the rest of the schedule.
    Everything is refused before the first step when it cannot work. Returns (start epoch, header,
    message or None).
    """
    from .checkpoint import read_checkpoint_header

    header, _ = read_checkpoint_header(resume)
    start_epoch = int(header["epoch"])
    if start_epoch >= epochs:
        raise ValueError(f"fit: checkpoint {resume!r} already holds {start_epoch} epoch(s); epochs={epochs} "
                         f"is the total to reach, so nothing is left to train (give more than {start_epoch})")
    replay = scheduler is not None and getattr(scheduler, "replayable", False)
    target = start_epoch * steps_per_epoch if interval == "step" else start_epoch
    total = getattr(scheduler, "total_steps", None)
    if replay and total is not None and target > total:
        raise ValueError(f"fit: {type(scheduler).__name__} has {total} steps in all, but the checkpoint stands "
                         f"at step {target}")
    if replay:
        fresh = [{k: g[k] for k in _SCHEDULE_KEYS if k in g} for g in optimizer.param_groups]
        start_state = scheduler.state_dict()
    header = load_checkpoint(resume, model, optimizer, None if replay else scheduler)
    extra = header.get("extra", {})
    if "loader" in extra and hasattr(train_loader, "load_state_dict"):
        train_loader.load_state_dict(extra["loader"])
    message = None
    if replay:
        for group, own in zip(optimizer.param_groups, fresh):
            group.update(own)
        scheduler.load_state_dict(start_state)
        for _ in range(target):
            scheduler.step()
        saved = header.get("scheduler", {}).get("state", {})
        unit = "step" if interval == "step" else "epoch"
        message = (f"{type(scheduler).__name__} rebuilt for {epochs} epochs and advanced to {unit} {target} "
                   f"(the checkpoint's schedule stood at {saved.get('last_epoch', '?')})")
    return start_epoch, header, message


def _checkpoint_on_disk(path):
    """(path, epoch) of a readable checkpoint already at ``path``, else None."""
    from .checkpoint import CheckpointError, read_checkpoint_header

    if not path or not os.path.isfile(path):
        return None
    try:
        return path, int(read_checkpoint_header(path)[0]["epoch"])
    except CheckpointError:
        return None


def _diverged(what, epoch, step, saved):
    """The TrainingDiverged for ``what`` at (epoch, step); ``saved`` is (path, epoch) on disk or None."""
    where = f"at epoch {epoch + 1}, step {step}"
    if saved:
        kept = f"the checkpoint on disk is {saved[0]} from epoch {saved[1]}; it was not replaced"
    else:
        kept = "no checkpoint was written"
    return TrainingDiverged(f"{what} {where}; training stopped and {kept} "
                            "(lower the learning rate or clip gradients)")


def fit(model, train_loader, val_loader=None, optimizer=None, loss_fn=None, epochs=1, scheduler=None,
        callbacks=(), checkpoint_dir=None, resume=None, scheduler_interval=None, clip_grad_norm=None,
        max_steps_per_epoch=None, progress=None, stream=None, history=None, extra_state=None) -> History:
    """Train ``model`` for ``epochs`` epochs and return a History.

    Each epoch: forward, loss, backward, optional gradient clipping, optimizer step (and a per-step
    scheduler step for OneCycleLR); then validation, the per-epoch scheduler step (ReduceLROnPlateau
    gets the validation loss), a checkpoint ``checkpoint_dir/checkpoint.safetensors`` (atomic) and the
    callbacks. ``resume=PATH`` restores model, optimizer, RNG, loader position and history, rebuilds
    the schedule for ``epochs`` at the saved position (see ``_resume``) and continues with the next
    epoch, so 2 epochs + resume + 2 epochs equals 4 epochs. ``epochs`` is the total.

    Divergence: a NaN/inf training loss, a NaN/inf validation loss or any non-finite parameter,
    buffer or optimizer state raises TrainingDiverged naming the epoch and step; a checkpoint is
    written only from a finite state, so the one on disk (named in the message) is the last good one.
    Ctrl-C (or SIGTERM through TrainingTerminated) saves ``interrupted.safetensors`` from a finite
    state and returns the history with ``interrupted=True`` (and ``signal`` 'SIGINT' or 'SIGTERM').

    Many processes: when ``xpnet.distributed.is_initialized()`` with a world size above 1, every rank
    calls ``fit`` with its own shard of the training data (a loader with a ``DistributedSampler``;
    ``set_epoch`` is called each epoch) and the same number of batches per epoch. The model is wrapped
    in DistributedDataParallel unless it already is (convert BatchNorm with
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` first if you want it synchronised); the training
    loss, accuracy and sample counts are summed over the ranks at every step (so a NaN on one rank
    stops every rank), and so are the validation sums (see ``evaluate``). Rank 0 alone prints and
    writes checkpoints (the unwrapped ``ddp.module``, so they resume on any number of ranks); every
    rank reads ``resume``. Callbacks run on every rank and see the reduced records; training stops
    early when any rank's callback asks to.
    """
    if optimizer is None or loss_fn is None:
        raise TypeError("fit: optimizer and loss_fn are required")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"fit: epochs must be a positive integer (the total to reach), got {epochs!r}")
    if max_steps_per_epoch is not None and (isinstance(max_steps_per_epoch, bool) or
                                            not isinstance(max_steps_per_epoch, int) or max_steps_per_epoch < 1):
        raise ValueError(f"fit: max_steps_per_epoch must be a positive integer or None, got {max_steps_per_epoch!r}")
    steps_per_epoch = len(train_loader) if max_steps_per_epoch is None else min(len(train_loader), max_steps_per_epoch)
    if steps_per_epoch < 1:
        raise ValueError(f"fit: the training loader yields no batch per epoch (len(train_loader) = "
                         f"{len(train_loader)}): the dataset is smaller than one batch, or empty")
    interval = _scheduler_interval(scheduler, scheduler_interval)
    rank, world = _world()
    if world > 1:
        from ..nn.parallel import DistributedDataParallel

        if not isinstance(model, DistributedDataParallel):
            model = DistributedDataParallel(model)
    inner = _unwrapped(model)  # what checkpoints hold and callbacks see
    lead = rank == 0
    if not lead:  # only rank 0 prints and writes files
        stream, progress, checkpoint_dir = None, False, None
    history = History(history)
    start_epoch = 0
    ckpt_path = os.path.join(checkpoint_dir, "checkpoint.safetensors") if checkpoint_dir else None
    saved = _checkpoint_on_disk(ckpt_path)  # (path, epoch) of the checkpoint that is on disk, or None
    if resume is not None:
        start_epoch, header, message = _resume(resume, inner, optimizer, scheduler, train_loader, epochs,
                                               steps_per_epoch, interval)
        history = History(header.get("extra", {}).get("history"))
        saved = (str(resume), start_epoch)
        if message and stream is not None:
            print(f"resume: epoch {start_epoch} of {epochs} from {resume}; {message}", file=stream, flush=True)
    trainer = Trainer(inner, optimizer, scheduler, history)
    display = Progress(epochs, enabled=progress, stream=stream if lead else io.StringIO())  # others: silent
    for cb in callbacks:
        cb.on_train_begin(trainer)

    def state_extra():
        extra = {"history": {k: list(v) for k, v in history.items()}}
        if hasattr(train_loader, "state_dict"):
            extra["loader"] = train_loader.state_dict()
        if extra_state:
            extra.update(extra_state)
        return extra

    epoch, step = start_epoch, 0
    try:
        for epoch in range(start_epoch, epochs):
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            sampler = getattr(train_loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):  # a DistributedSampler: this epoch's shuffle
                sampler.set_epoch(epoch)
            model.train()
            display.start_epoch(epoch, steps_per_epoch)
            total_loss, correct, seen, step = 0.0, 0, 0, 0
            started = time.perf_counter()
            for step, (xb, yb) in enumerate(train_loader, start=1):
                if step > steps_per_epoch:
                    step -= 1
                    break
                out = model(xb)
                loss = loss_fn(out, yb)
                optimizer.zero_grad()
                loss.backward()
                if clip_grad_norm is not None:
                    from ..optim.clip import clip_grad_norm_

                    clip_grad_norm_(model.parameters(), clip_grad_norm)
                value = float(loss.item())
                n = yb.shape[0]
                batch_correct = correct_count(out.data, unwrap(yb))
                if world > 1:  # the global batch's mean loss, on every rank
                    loss_sum, batch_correct, n = _sum_over_ranks([value * n, batch_correct, n])
                    value, batch_correct, n = loss_sum / n, int(batch_correct), int(n)
                if not math.isfinite(value):
                    raise _diverged(f"the training loss became {value}", epoch, step, saved)
                optimizer.step()
                if scheduler is not None and interval == "step":
                    scheduler.step()
                total_loss += value * n
                correct += batch_correct
                seen += n
                elapsed = time.perf_counter() - started
                display.update(total_loss / seen, correct / seen, seen / max(elapsed, 1e-9))
            if seen == 0:
                raise ValueError(f"fit: epoch {epoch + 1} produced no training batch although len(train_loader) "
                                 f"is {len(train_loader)}")
            train_seconds = time.perf_counter() - started
            val_loss, val_acc = (None, None)
            if val_loader is not None:
                val_loss, val_acc = evaluate(model, val_loader, loss_fn)
                if val_loss is not None and not math.isfinite(val_loss):
                    raise _diverged(f"the validation loss became {val_loss}", epoch, step, saved)
            bad = nonfinite_report(inner, optimizer)
            if bad:
                raise _diverged(bad, epoch, step, saved)
            record = {"epoch": epoch, "train_loss": total_loss / seen, "train_acc": correct / seen,
                      "val_loss": val_loss, "val_acc": val_acc, "lr": _current_lr(optimizer),
                      "seconds": time.perf_counter() - started, "images_per_s": seen / max(train_seconds, 1e-9)}
            if scheduler is not None and interval == "epoch":
                if getattr(scheduler, "needs_metric", False):
                    scheduler.step(val_loss if val_loss is not None else record["train_loss"])
                else:
                    scheduler.step()
            history.append(record)
            display.end_epoch(epoch, record, epochs - epoch - 1)
            if ckpt_path:
                save_checkpoint(ckpt_path, inner, optimizer, scheduler, epoch=epoch + 1, extra=state_extra())
                history.checkpoint_path = ckpt_path
                saved = (ckpt_path, epoch + 1)
            stop = False
            for cb in callbacks:
                stop = bool(cb.on_epoch_end(trainer, epoch, record)) or stop
            if world > 1:  # every rank stops together
                stop = _sum_over_ranks([stop])[0] > 0
            if stop:
                history.stopped_early = True
                break
    except KeyboardInterrupt as exc:
        display.close()
        history.interrupted = True
        history.signal = "SIGTERM" if isinstance(exc, TrainingTerminated) else "SIGINT"
        if checkpoint_dir:
            bad = nonfinite_report(inner, optimizer)
            if bad:
                # an interrupted step can leave nothing worth keeping; never save a diverged state
                history.checkpoint_path = saved[0] if saved else None
                history.unsaved_reason = f"{bad}, so no interrupted checkpoint was written"
                return history
            path = os.path.join(checkpoint_dir, "interrupted.safetensors")
            save_checkpoint(path, inner, optimizer, scheduler, epoch=len(history["epoch"]), extra=state_extra())
            history.checkpoint_path = path
        return history
    finally:
        display.close()
    for cb in callbacks:
        cb.on_train_end(trainer)
    return history
