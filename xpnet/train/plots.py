"""Loss/accuracy curves as PNG (host-side; matplotlib is an optional extra)."""

from __future__ import annotations

import io

from .checkpoint import atomic_write_bytes


def plot_history(history: dict, path: str):
    """Draw train/val loss and accuracy per epoch to ``path`` (written atomically like a checkpoint).
    Returns the path, or None (with a message on stderr) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        import sys

        print("xpnet: matplotlib is not installed, so no curve PNG was drawn "
              "(pip install 'xpnet[plot]'); training goes on.", file=sys.stderr)
        return None
    epochs = [e + 1 for e in history["epoch"]]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["train_loss"], label="train")
    if any(v is not None for v in history.get("val_loss", [])):
        ax_loss.plot(epochs, history["val_loss"], label="validation")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_acc.plot(epochs, [100 * a for a in history["train_acc"]], label="train")
    if any(v is not None for v in history.get("val_acc", [])):
        ax_acc.plot(epochs, [None if a is None else 100 * a for a in history["val_acc"]], label="validation")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend()
    ax_acc.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())  # never through a link planted at ``path``
    return path
