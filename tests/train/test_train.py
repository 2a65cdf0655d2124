import os
import subprocess
import sys

import numpy as np
import pytest

import xpnet
from xpnet import data, models, nn, optim
from xpnet.train import (CheckpointError, EarlyStopping, TrainingDiverged, confusion_matrix, fit,
                         load_checkpoint, save_checkpoint, top_k_accuracy)
from xpnet.train.checkpoint import read_checkpoint

from conftest import to_np


def _blobs(n=256, d=8, classes=3, seed=0):
    gen = np.random.default_rng(seed)
    centers = gen.normal(0, 3, (classes, d))
    y = gen.integers(0, classes, n)
    x = (centers[y] + gen.normal(0, 1, (n, d))).astype(np.float32)
    return x.reshape(n, 1, 1, d), y


def _setup(seed=0, dropout=0.2):
    xpnet.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))
    model.model_name = "blobs-mlp"
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    x, y = _blobs()
    loader = data.DataLoader(data.TensorDataset(x, y), batch_size=32, shuffle=True, seed=seed)
    return model, opt, sched, loader


def test_a_few_steps_lower_the_loss(backend):
    model, opt, sched, loader = _setup()
    history = fit(model, loader, loader, opt, nn.CrossEntropyLoss(), epochs=3, scheduler=sched, progress=False)
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["val_acc"][-1] > 0.8
    assert history["lr"] == pytest.approx([0.1, 0.1 * 0.7, 0.1 * 0.49])  # the rate each epoch used


def test_resume_continues_exactly(backend, tmp_path):
    model, opt, sched, loader = _setup()
    fit(model, loader, None, opt, nn.CrossEntropyLoss(), epochs=4, scheduler=sched, progress=False)
    straight = {k: to_np(v) for k, v in model.state_dict().items()}

    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    model, opt, sched, loader = _setup()
    fit(model, loader, None, opt, nn.CrossEntropyLoss(), epochs=2, scheduler=sched, checkpoint_dir=str(a_dir),
        progress=False)
    xpnet.manual_seed(123)  # a fresh process would start elsewhere: the checkpoint must restore RNG state
    model2, opt2, sched2, loader2 = _setup(seed=0)
    history = fit(model2, loader2, None, opt2, nn.CrossEntropyLoss(), epochs=4, scheduler=sched2,
                  checkpoint_dir=str(b_dir), resume=str(a_dir / "checkpoint.safetensors"), progress=False)
    assert history["epoch"] == [0, 1, 2, 3]
    for k, v in model2.state_dict().items():
        np.testing.assert_array_equal(to_np(v), straight[k], err_msg=k)


def test_checkpoint_round_trip_and_mismatch_leaves_model(tmp_path):
    model, opt, sched, loader = _setup()
    fit(model, loader, None, opt, nn.CrossEntropyLoss(), epochs=1, scheduler=sched, progress=False)
    path = save_checkpoint(tmp_path / "c.safetensors", model, opt, sched, epoch=1)
    header, tensors = read_checkpoint(path)
    assert header["epoch"] == 1 and header["optimizer"]["class"] == "SGD"
    assert "model.1.weight" in tensors
    other = nn.Sequential(nn.Flatten(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3))
    before = {k: to_np(v).copy() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError, match="1.weight") as err:
        load_checkpoint(path, other)
    assert "left unchanged" in str(err.value)
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(to_np(v), before[k])


def test_atomic_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched, _ = _setup()
    path = str(tmp_path / "c.safetensors")
    save_checkpoint(path, model, opt, sched, epoch=1)
    original = open(path, "rb").read()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, opt, sched, epoch=2)
    monkeypatch.undo()
    assert open(path, "rb").read() == original
    assert read_checkpoint(path)[0]["epoch"] == 1
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")] == []


def test_corrupt_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.safetensors")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model, opt, sched, loader = _setup()
    fit(model, loader, None, opt, nn.CrossEntropyLoss(), epochs=1, checkpoint_dir=str(tmp_path), progress=False)
    good = open(tmp_path / "checkpoint.safetensors", "rb").read()
    opt.param_groups[0]["lr"] = 1e30
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step \d+.*checkpoint.safetensors from epoch 1"):
        fit(model, loader, None, opt, nn.CrossEntropyLoss(), epochs=3, checkpoint_dir=str(tmp_path), progress=False)
    assert open(tmp_path / "checkpoint.safetensors", "rb").read() == good


def test_early_stopping_restores_best(backend):
    model, opt, sched, loader = _setup()
    stopper = EarlyStopping(patience=1, monitor="val_loss")
    opt.param_groups[0]["lr"] = 0.5
    history = fit(model, loader, loader, opt, nn.CrossEntropyLoss(), epochs=30, callbacks=[stopper], progress=False)
    assert history.stopped_early and len(history["epoch"]) < 30
    best = stopper.best_state
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(to_np(v), best[k])


def test_metrics_against_closed_forms(backend):
    logits = xpnet.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]])
    target = xpnet.tensor([1, 2, 2, 1])
    assert top_k_accuracy(logits, target, k=1) == 0.5
    assert top_k_accuracy(logits, target, k=2) == 1.0
    cm = confusion_matrix(xpnet.argmax(logits, axis=-1).data, target.data, 3)
    np.testing.assert_array_equal(to_np(cm), [[0, 0, 0], [1, 1, 0], [1, 0, 1]])


def _run_cli(*args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "xpnet", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def test_cli_train_and_eval_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = _run_cli("train", "--epochs", "1", "--limit-batches", "3", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and "checkpoint:" in proc.stdout
    assert (out / "checkpoint.safetensors").exists() and (out / "history.csv").exists()
    proc = _run_cli("eval", str(out / "checkpoint.safetensors"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout and "confusion matrix" in proc.stdout


def test_cli_user_errors_are_short(tmp_path):
    proc = _run_cli("train", "--dataset", "mnist:/no/such/dir", cwd=tmp_path)
    assert proc.returncode == 2
    assert "/no/such/dir" in proc.stderr and "mnist-sample" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = _run_cli("train", "--model", "vgg16", "--epochs", "1", "--limit-batches", "1", cwd=tmp_path)
    assert proc.returncode == 2 and "vgg16" in proc.stderr and "(1, 28, 28)" in proc.stderr


def test_ctrl_c_saves_a_checkpoint_and_returns(tmp_path):
    model, opt, sched, loader = _setup()
    calls = {"n": 0}
    base = nn.CrossEntropyLoss()

    def interrupting_loss(out, y):
        calls["n"] += 1
        if calls["n"] == 12:  # during the second epoch (8 batches per epoch)
            raise KeyboardInterrupt
        return base(out, y)

    history = fit(model, loader, None, opt, interrupting_loss, epochs=3, checkpoint_dir=str(tmp_path), progress=False)
    assert history.interrupted and history["epoch"] == [0]
    header, _ = read_checkpoint(tmp_path / "interrupted.safetensors")
    assert header["epoch"] == 1
    restored = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    load_checkpoint(tmp_path / "interrupted.safetensors", restored)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(to_np(restored.state_dict()[k]), to_np(v))


def test_snapshot_ensemble_averages_cycle_end_weights(backend):
    from xpnet.train import SnapshotEnsemble, ensemble_predict, predict

    model, opt, _, loader = _setup(dropout=0.0)
    sched = optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2)
    snaps = SnapshotEnsemble(cycle_length=2)
    fit(model, loader, None, opt, nn.CrossEntropyLoss(), epochs=6, scheduler=sched, callbacks=[snaps], progress=False)
    assert len(snaps.snapshots) == 3
    final = {k: to_np(v).copy() for k, v in model.state_dict().items()}
    for k in final:  # the last snapshot is the final state (epoch 6 ends a cycle)
        np.testing.assert_array_equal(snaps.snapshots[-1][k], final[k])
    x, y = _blobs()
    ordered = data.DataLoader(data.TensorDataset(x, y), batch_size=64)
    probs, targets = ensemble_predict(model, snaps.snapshots, ordered)
    members = []
    for state in snaps.snapshots:
        model.load_state_dict(state)
        members.append(to_np(predict(model, ordered)[0]))
    model.load_state_dict(final)
    np.testing.assert_allclose(to_np(probs), np.mean(members, axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(to_np(probs).sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(to_np(targets), y)
    # a shuffling loader is rewound for each snapshot, so rows still line up with their targets
    shuffled_probs, shuffled_targets = ensemble_predict(model, snaps.snapshots, loader)
    ordered_hits = (to_np(probs).argmax(1) == y).sum()
    assert (to_np(shuffled_probs).argmax(1) == to_np(shuffled_targets)).sum() == ordered_hits
