"""The training loop: ``fit``, ``evaluate``, ``predict`` and snapshot-ensemble prediction."""

from __future__ import annotations

import csv
import math
import os
import time

from array_api_compat import array_namespace

from ..autodiff import no_grad
from ..backends import unwrap
from .callbacks import copy_state
from .checkpoint import load_checkpoint, save_checkpoint
from .metrics import correct_count
from .progress import Progress

HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; training stopped and the last good checkpoint was kept."""


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

    def append(self, record: dict):
        for k in HISTORY_KEYS:
            self[k].append(record.get(k))

    def to_csv(self, path: str) -> str:
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(HISTORY_KEYS)
            for row in zip(*(self[k] for k in HISTORY_KEYS)):
                writer.writerow(["" if v is None else v for v in row])
        return path


def _current_lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"]) if optimizer is not None else float("nan")


def evaluate(model, loader, loss_fn=None, max_batches=None):
    """(mean loss or None, accuracy) of ``model`` in eval mode over ``loader``."""
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
        return interval
    return "step" if type(scheduler).__name__ == "OneCycleLR" else "epoch"


def fit(model, train_loader, val_loader=None, optimizer=None, loss_fn=None, epochs=1, scheduler=None,
        callbacks=(), checkpoint_dir=None, resume=None, scheduler_interval=None, clip_grad_norm=None,
        max_steps_per_epoch=None, progress=None, stream=None, history=None, extra_state=None) -> History:
    """Train ``model`` for ``epochs`` epochs and return a History.

    Each epoch: forward, loss, backward, optional gradient clipping, optimizer step (and a per-step
    scheduler step for OneCycleLR); then validation, the per-epoch scheduler step (ReduceLROnPlateau
    gets the validation loss), a checkpoint ``checkpoint_dir/checkpoint.safetensors`` (atomic) and the
    callbacks. ``resume=PATH`` restores model, optimizer, scheduler, RNG, loader position and history
    and continues with the next epoch, so 2 epochs + resume + 2 epochs equals 4 epochs.

    A NaN/inf loss raises TrainingDiverged naming the epoch and step (the last good checkpoint stays);
    Ctrl-C saves ``interrupted.safetensors`` and returns the history with ``interrupted=True``.
    """
    if optimizer is None or loss_fn is None:
        raise TypeError("fit: optimizer and loss_fn are required")
    history = History(history)
    start_epoch = 0
    if resume is not None:
        header = load_checkpoint(resume, model, optimizer, scheduler)
        start_epoch = int(header["epoch"])
        extra = header.get("extra", {})
        history = History(extra.get("history"))
        if "loader" in extra and hasattr(train_loader, "load_state_dict"):
            train_loader.load_state_dict(extra["loader"])
    interval = _scheduler_interval(scheduler, scheduler_interval)
    trainer = Trainer(model, optimizer, scheduler, history)
    display = Progress(epochs, enabled=progress, stream=stream)
    for cb in callbacks:
        cb.on_train_begin(trainer)
    ckpt_path = os.path.join(checkpoint_dir, "checkpoint.safetensors") if checkpoint_dir else None

    def state_extra():
        extra = {"history": {k: list(v) for k, v in history.items()}}
        if hasattr(train_loader, "state_dict"):
            extra["loader"] = train_loader.state_dict()
        if extra_state:
            extra.update(extra_state)
        return extra

    epoch = start_epoch
    try:
        for epoch in range(start_epoch, epochs):
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(epoch)
            model.train()
            steps = len(train_loader) if max_steps_per_epoch is None else min(len(train_loader), max_steps_per_epoch)
            display.start_epoch(epoch, steps)
            total_loss, correct, seen = 0.0, 0, 0
            started = time.perf_counter()
            for step, (xb, yb) in enumerate(train_loader):
                if max_steps_per_epoch is not None and step >= max_steps_per_epoch:
                    break
                out = model(xb)
                loss = loss_fn(out, yb)
                optimizer.zero_grad()
                loss.backward()
                if clip_grad_norm is not None:
                    from ..optim.clip import clip_grad_norm_

                    clip_grad_norm_(model.parameters(), clip_grad_norm)
                value = float(loss.item())
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"loss became {value} at epoch {epoch + 1}, step {step + 1}; training stopped"
                        + (f" and the last good checkpoint {ckpt_path} was kept" if ckpt_path and
                           os.path.exists(ckpt_path) else "")
                        + " (lower the learning rate or clip gradients)")
                optimizer.step()
                if scheduler is not None and interval == "step":
                    scheduler.step()
                n = yb.shape[0]
                total_loss += value * n
                correct += correct_count(out.data, unwrap(yb))
                seen += n
                elapsed = time.perf_counter() - started
                display.update(total_loss / seen, correct / seen, seen / max(elapsed, 1e-9))
            train_seconds = time.perf_counter() - started
            val_loss, val_acc = (None, None)
            if val_loader is not None:
                val_loss, val_acc = evaluate(model, val_loader, loss_fn)
            record = {"epoch": epoch, "train_loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1),
                      "val_loss": val_loss, "val_acc": val_acc, "lr": _current_lr(optimizer),
                      "seconds": time.perf_counter() - started, "images_per_s": seen / max(train_seconds, 1e-9)}
            if scheduler is not None and interval == "epoch":
                if type(scheduler).__name__ == "ReduceLROnPlateau":
                    scheduler.step(val_loss if val_loss is not None else record["train_loss"])
                else:
                    scheduler.step()
            history.append(record)
            display.end_epoch(epoch, record, epochs - epoch - 1)
            if ckpt_path:
                save_checkpoint(ckpt_path, model, optimizer, scheduler, epoch=epoch + 1, extra=state_extra())
                history.checkpoint_path = ckpt_path
            stop = False
            for cb in callbacks:
                stop = bool(cb.on_epoch_end(trainer, epoch, record)) or stop
            if stop:
                history.stopped_early = True
                break
    except KeyboardInterrupt:
        display.close()
        history.interrupted = True
        if checkpoint_dir:
            path = os.path.join(checkpoint_dir, "interrupted.safetensors")
            save_checkpoint(path, model, optimizer, scheduler, epoch=len(history["epoch"]), extra=state_extra())
            history.checkpoint_path = path
        return history
    finally:
        display.close()
    for cb in callbacks:
        cb.on_train_end(trainer)
    return history

