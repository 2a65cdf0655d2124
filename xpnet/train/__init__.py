"""Training: the fit loop, metrics, progress, checkpoints, callbacks and curves."""

from .callbacks import Callback, EarlyStopping, SnapshotEnsemble, copy_state
from .checkpoint import CheckpointError, atomic_write_bytes, load_checkpoint, read_checkpoint, save_checkpoint
from .loop import History, Trainer, TrainingDiverged, ensemble_predict, evaluate, fit, predict
from .metrics import accuracy, confusion_matrix, correct_count, top_k_accuracy, top_k_correct
from .plots import plot_history

__all__ = ["Callback", "EarlyStopping", "SnapshotEnsemble", "copy_state", "CheckpointError",
           "atomic_write_bytes", "load_checkpoint", "read_checkpoint", "save_checkpoint", "History",
           "Trainer", "TrainingDiverged", "ensemble_predict", "evaluate", "fit", "predict", "accuracy",
           "confusion_matrix", "correct_count", "top_k_accuracy", "top_k_correct", "plot_history"]
