"""Progress display: a tqdm bar per epoch (loss, accuracy, images/s, ETA) and one summary line.

Host-side only (no array work). Without a terminal the bar is off and only the lines print.
"""

from __future__ import annotations

import sys
import time


def format_seconds(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    def __init__(self, total_epochs: int, enabled=None, stream=None):
        self.total_epochs = total_epochs
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.perf_counter()
        self.epoch_times: list = []
        self._bar = None

    def start_epoch(self, epoch: int, steps: int):
        self._epoch_start = time.perf_counter()
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.total_epochs}", unit="batch",
                             file=self.stream, leave=False, dynamic_ncols=True)

    def update(self, loss: float, acc: float, images_per_s: float):
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", acc=f"{100 * acc:.1f}%", img_s=f"{images_per_s:.0f}",
                                  refresh=False)
            self._bar.update(1)

    def end_epoch(self, epoch: int, record: dict, epochs_left: int):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        took = time.perf_counter() - self._epoch_start
        self.epoch_times.append(took)
        eta = epochs_left * (sum(self.epoch_times) / len(self.epoch_times))
        parts = [f"epoch {epoch + 1}/{self.total_epochs}",
                 f"loss {record['train_loss']:.4f}", f"acc {100 * record['train_acc']:.2f}%"]
        if record.get("val_loss") is not None:
            parts += [f"val_loss {record['val_loss']:.4f}", f"val_acc {100 * record['val_acc']:.2f}%"]
        parts += [f"lr {record['lr']:.3g}", f"{record['images_per_s']:.0f} img/s", f"{took:.1f}s",
                  f"ETA {format_seconds(eta)}"]
        print("  ".join(parts), file=self.stream, flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
