"""Never lose a run: divergence, run directories, resume for every schedule, arguments, signals.

Each test here failed before the fix it names (issue #13's numbering in the comments).
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import xpnet
from xpnet import data, models, nn, optim
from xpnet.cli import main
from xpnet.train import CheckpointError, TrainingDiverged, fit, read_checkpoint, save_checkpoint
from xpnet.train.loop import History
from xpnet.train.rundir import RunDirError, choose_run_dir, prepare_run_dir

from conftest import to_np

SMALL = ("--dataset", "synthetic", "--model", "mlp", "--synthetic-size", "64", "--batch-size", "16")


def _blobs(n=128, d=8, classes=3, seed=0):
    gen = np.random.default_rng(seed)
    centers = gen.normal(0, 3, (classes, d))
    y = gen.integers(0, classes, n)
    return (centers[y] + gen.normal(0, 1, (n, d))).astype(np.float32), y


def _setup(seed=0):
    xpnet.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = _blobs()
    loader = data.DataLoader(data.TensorDataset(x, y), batch_size=32, shuffle=True, seed=seed)
    return model, opt, loader


class _BreakAt:
    """An optimizer wrapper whose step number ``at`` leaves the weights at +inf (a finite loss before)."""

    def __init__(self, opt, at):
        self.opt, self.at, self.calls = opt, at, 0
        self.param_groups, self.state = opt.param_groups, opt.state

    def __getattr__(self, name):
        return getattr(self.opt, name)

    def step(self):
        self.opt.step()
        self.calls += 1
        if self.calls == self.at:
            for group in self.opt.param_groups:
                for p in group["params"]:
                    p.data = p.data * float("inf")


def _cli(*args, capsys=None):
    code = main(list(args))
    out = capsys.readouterr() if capsys is not None else None
    return code, out


# ------------------------------------------------------------------------------------------- 1
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("with_val", [True, False])
def test_divergence_at_the_end_of_an_epoch_never_reaches_the_checkpoint(backend, tmp_path, with_val):
    model, opt, loader = _setup()
    broken = _BreakAt(opt, at=2 * len(loader))  # the last step of epoch 2
    with pytest.raises(TrainingDiverged) as info:
        fit(model, loader, loader if with_val else None, broken, nn.CrossEntropyLoss(), epochs=3,
            checkpoint_dir=str(tmp_path), progress=False)
    message = str(info.value)
    assert f"at epoch 2, step {len(loader)}" in message
    assert "checkpoint.safetensors from epoch 1" in message and "not replaced" in message
    header, tensors = read_checkpoint(tmp_path / "checkpoint.safetensors")
    assert header["epoch"] == 1
    assert all(np.isfinite(v).all() for v in tensors.values())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_before_any_checkpoint_says_none_was_written(backend, tmp_path):
    model, opt, loader = _setup()
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, .*no checkpoint was written"):
        fit(model, loader, None, _BreakAt(opt, at=1), nn.CrossEntropyLoss(), epochs=2,
            checkpoint_dir=str(tmp_path), progress=False)
    assert not (tmp_path / "checkpoint.safetensors").exists()


def test_resume_from_a_checkpoint_with_a_nan_learning_rate_is_refused_before_training(backend, tmp_path):
    model, opt, loader = _setup()
    opt.param_groups[0]["lr"] = float("nan")
    path = save_checkpoint(tmp_path / "bad.safetensors", model, opt, epoch=1)
    model2, opt2, loader2 = _setup(seed=1)
    before = {k: to_np(v).copy() for k, v in model2.state_dict().items()}
    calls = []

    def loss(out, y):
        calls.append(1)
        return nn.CrossEntropyLoss()(out, y)

    with pytest.raises(CheckpointError, match="lr"):
        fit(model2, loader2, None, opt2, loss, epochs=3, resume=path, progress=False)
    assert not calls
    for k, v in model2.state_dict().items():
        np.testing.assert_array_equal(to_np(v), before[k])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_cli_divergence_exits_1_and_names_the_epoch(tmp_path, capsys):
    code, out = _cli("train", *SMALL, "--epochs", "2", "--lr", "1e30", "--scheduler", "none",
                     "--out", str(tmp_path / "run"), capsys=capsys)
    assert code == 1
    assert "training diverged" in out.err and "at epoch 1, step" in out.err


# ------------------------------------------------------------------------------------------- 2
def test_rerun_into_an_existing_run_takes_the_next_free_name(tmp_path, capsys):
    out = tmp_path / "runs" / "mlp-synthetic"
    assert _cli("train", *SMALL, "--epochs", "1", "--out", str(out), capsys=capsys)[0] == 0
    first = (out / "checkpoint.safetensors").read_bytes()
    code, text = _cli("train", *SMALL, "--epochs", "1", "--lr", "0.01", "--out", str(out), capsys=capsys)
    assert code == 0
    assert f"{out} holds an earlier run, so this run writes to {out}-2" in text.out
    assert (out / "checkpoint.safetensors").read_bytes() == first
    assert (tmp_path / "runs" / "mlp-synthetic-2" / "checkpoint.safetensors").exists()
    code, text = _cli("train", *SMALL, "--epochs", "1", "--out", str(out), "--overwrite", capsys=capsys)
    assert code == 0 and "--overwrite: removed" in text.out
    assert (out / "checkpoint.safetensors").read_bytes() != first
    assert not (tmp_path / "runs" / "mlp-synthetic-3").exists()


def test_choose_run_dir_rules(tmp_path):
    fresh = tmp_path / "a"
    assert choose_run_dir(str(fresh)) == (str(fresh), None)
    assert choose_run_dir(str(fresh))[0] == str(fresh)  # still empty: nothing to overwrite
    (fresh / "history.csv").write_text("x")
    (fresh / "notes.txt").write_text("mine")
    taken, note = choose_run_dir(str(fresh))
    assert taken == f"{fresh}-2" and "earlier run" in note
    assert choose_run_dir(str(fresh))[0] == f"{fresh}-2"  # made but empty: reused
    (tmp_path / "a-2" / "x").write_text("x")
    assert choose_run_dir(str(fresh))[0] == f"{fresh}-3"
    assert choose_run_dir(str(fresh), overwrite=True)[0] == str(fresh)
    assert not (fresh / "history.csv").exists() and (fresh / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="not a folder"):
        choose_run_dir(str(tmp_path / "file"))


# ------------------------------------------------------------------------------------------- 3
@pytest.mark.parametrize("scheduler", ["onecycle", "cosine", "step", "none"])
def test_resume_to_a_larger_total_works_for_every_scheduler(tmp_path, capsys, scheduler):
    out = tmp_path / "run"
    args = (*SMALL, "--scheduler", scheduler, "--out", str(out))
    assert _cli("train", *args, "--epochs", "2", capsys=capsys)[0] == 0
    ckpt = str(out / "checkpoint.safetensors")
    code, text = _cli("train", *SMALL, "--scheduler", scheduler, "--resume", ckpt, "--epochs", "4", capsys=capsys)
    assert code == 0, text.err
    header, _ = read_checkpoint(ckpt)
    assert header["epoch"] == 4 and header["extra"]["history"]["epoch"] == [0, 1, 2, 3]
    if scheduler != "none":
        assert "rebuilt for 4 epochs" in text.out
    if scheduler == "onecycle":  # stretched over 4 epochs of 64 / 16 = 4 steps, and finished
        assert header["scheduler"]["state"]["total_steps"] == 16
        assert header["scheduler"]["state"]["last_epoch"] == 16


def test_resume_to_a_total_already_reached_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli("train", *SMALL, "--epochs", "2", "--out", str(out), capsys=capsys)[0] == 0
    before = (out / "checkpoint.safetensors").read_bytes()
    code, text = _cli("train", *SMALL, "--resume", str(out / "checkpoint.safetensors"), "--epochs", "2",
                      capsys=capsys)
    assert code == 2 and "already holds 2 epoch(s)" in text.err and "--epochs" in text.err
    assert (out / "checkpoint.safetensors").read_bytes() == before


def test_onecycle_stopped_then_resumed_equals_a_straight_run(backend, tmp_path):
    def run(stop_after, resume=None, folder=None):
        model, opt, loader = _setup()
        sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, epochs=4, steps_per_epoch=len(loader))

        class Stop:
            def on_train_begin(self, trainer): pass
            def on_train_end(self, trainer): pass
            def on_epoch_end(self, trainer, epoch, record):
                return epoch + 1 == stop_after

        fit(model, loader, None, opt, nn.CrossEntropyLoss(), epochs=4, scheduler=sched, callbacks=[Stop()],
            checkpoint_dir=folder, resume=resume, progress=False)
        return model, opt

    straight, opt_a = run(None)
    run(2, folder=str(tmp_path))
    resumed, opt_b = run(None, resume=str(tmp_path / "checkpoint.safetensors"), folder=str(tmp_path / "b"))
    assert opt_a.param_groups[0]["lr"] == opt_b.param_groups[0]["lr"]
    for k, v in straight.state_dict().items():
        np.testing.assert_array_equal(to_np(resumed.state_dict()[k]), to_np(v), err_msg=k)


def test_a_ctrl_c_checkpoint_resumed_with_the_same_total_finishes(backend, tmp_path):
    model, opt, loader = _setup()
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, epochs=3, steps_per_epoch=len(loader))
    calls = {"n": 0}

    def loss(out, y):
        calls["n"] += 1
        if calls["n"] == len(loader) + 2:  # in the middle of epoch 2
            raise KeyboardInterrupt
        return nn.CrossEntropyLoss()(out, y)

    history = fit(model, loader, None, opt, loss, epochs=3, scheduler=sched, checkpoint_dir=str(tmp_path),
                  progress=False)
    assert history.interrupted and history.signal == "SIGINT"
    model, opt, loader = _setup()
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, epochs=3, steps_per_epoch=len(loader))
    history = fit(model, loader, None, opt, nn.CrossEntropyLoss(), epochs=3, scheduler=sched,
                  checkpoint_dir=str(tmp_path), resume=str(tmp_path / "interrupted.safetensors"), progress=False)
    assert history["epoch"] == [0, 1, 2]
    assert sched.last_epoch == sched.total_steps


# ------------------------------------------------------------------------------------------- 9
def test_an_unwritable_out_is_an_error_before_the_first_step(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, text = _cli("train", *SMALL, "--epochs", "1", "--out", str(tmp_path / "file" / "run"), capsys=capsys)
    assert code == 2 and str(tmp_path / "file") in text.err
    assert "epoch" not in text.out.replace("epochs", "")


def test_a_full_disk_is_found_by_the_probe(tmp_path, monkeypatch):
    import errno

    def full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RunDirError, match=r"cannot be written \(no space left on the device\)") as info:
        prepare_run_dir(str(tmp_path / "run"))
    assert str(tmp_path / "run") in str(info.value)
    monkeypatch.undo()
    assert os.listdir(tmp_path / "run") == []  # probe and temporary gone


def test_eval_of_a_checkpoint_trained_for_other_classes_is_refused(tmp_path, capsys):
    model = models.create("mlp", num_classes=3, in_channels=1, input_size=28)
    path = save_checkpoint(tmp_path / "three.safetensors", model, epoch=1)
    code, text = _cli("eval", str(path), "--dataset", "mnist-sample", capsys=capsys)
    assert code == 2 and "trained for 3 classes" in text.err and "has 10" in text.err


# ------------------------------------------------------------------------------------------ 10
@pytest.mark.parametrize("argv, named", [
    (("--epochs", "0"), "--epochs"), (("--epochs", "-1"), "--epochs"), (("--batch-size", "0"), "--batch-size"),
    (("--lr", "0"), "--lr"), (("--lr", "nan"), "--lr"), (("--synthetic-size", "0"), "--synthetic-size"),
    (("--image-size", "0"), "--image-size"), (("--limit-batches", "0"), "--limit-batches"),
    (("--seed", "-1"), "--seed"), (("--momentum", "1.5"), "--momentum"), (("--weight-decay", "-1"), "--weight-decay"),
])
def test_invalid_arguments_exit_2_naming_the_argument(tmp_path, capsys, argv, named):
    with pytest.raises(SystemExit) as info:
        main(["train", *SMALL, *argv, "--out", str(tmp_path / "run")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {named}" in err and repr(argv[1]) in err
    assert not (tmp_path / "run").exists()


def test_eval_batch_size_zero_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["eval", str(tmp_path / "x.safetensors"), "--batch-size", "0"])
    assert info.value.code == 2 and "argument --batch-size" in capsys.readouterr().err


def test_a_dataset_smaller_than_one_batch_is_refused(tmp_path, capsys):
    code, text = _cli("train", "--dataset", "synthetic", "--model", "mlp", "--synthetic-size", "8",
                      "--batch-size", "64", "--out", str(tmp_path / "run"), capsys=capsys)
    assert code == 2 and "--batch-size 64 is larger than the training split" in text.err and "(8 images)" in text.err
    assert not (tmp_path / "run").exists()


def test_fit_refuses_an_empty_loader_and_a_bad_epoch_count(backend):
    model, opt, _ = _setup()
    x, y = _blobs(n=8)
    tiny = data.DataLoader(data.TensorDataset(x, y), batch_size=32, drop_last=True)
    with pytest.raises(ValueError, match="no batch per epoch"):
        fit(model, tiny, None, opt, nn.CrossEntropyLoss(), epochs=1, progress=False)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        fit(model, tiny, None, opt, nn.CrossEntropyLoss(), epochs=0, progress=False)
    with pytest.raises(ValueError, match="max_steps_per_epoch"):
        fit(model, tiny, None, opt, nn.CrossEntropyLoss(), epochs=1, max_steps_per_epoch=0, progress=False)


def test_a_bad_backend_in_the_environment_exits_2(tmp_path):
    env = {**os.environ, "XPNET_BACKEND": "no-such-backend"}
    proc = subprocess.run([sys.executable, "-m", "xpnet", "info"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "no-such-backend" in proc.stderr and "Traceback" not in proc.stderr


def test_error_messages_name_what_they_are_about():
    import errno

    from xpnet.cli import describe_error

    code, text = describe_error(OSError(errno.ENOSPC, "No space left on device", "/data/run/history.csv"))
    assert code == 1 and "/data/run/history.csv" in text and "No space left" in text
    code, text = describe_error(MemoryError())
    assert code == 1 and "out of memory" in text and "--batch-size" in text
    assert describe_error(TrainingDiverged("x"))[0] == 1
    assert describe_error(CheckpointError("x"))[0] == 2


# ------------------------------------------------------------------------------------------ 12
def test_history_and_curves_replace_a_planted_link_instead_of_following_it(tmp_path):
    from xpnet.train import plot_history

    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("history.csv", "curves.png"):
        os.symlink(outside, run / name)
    history = History()
    history.append({"epoch": 0, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5})
    history.to_csv(str(run / "history.csv"))
    plot_history(history, str(run / "curves.png"))
    assert outside.read_text() == "precious"
    for name in ("history.csv", "curves.png"):
        assert not os.path.islink(run / name) and os.path.getsize(run / name) > 0
    assert (run / "history.csv").read_text().startswith("epoch,train_loss")


# ------------------------------------------------------------------------------------------ 14
def test_stale_temporaries_are_removed_when_a_run_continues(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli("train", *SMALL, "--epochs", "1", "--out", str(out), capsys=capsys)[0] == 0
    (out / ".tmp-abc123.part").write_bytes(b"\0" * 1000)
    code, text = _cli("train", *SMALL, "--epochs", "2", "--resume", str(out / "checkpoint.safetensors"),
                      capsys=capsys)
    assert code == 0 and "removed 1 temporary file(s)" in text.out
    assert not (out / ".tmp-abc123.part").exists()


def test_sigterm_in_fit_saves_an_interrupted_checkpoint(backend, tmp_path):
    from xpnet.train.cli import _SigtermGuard

    model, opt, loader = _setup()
    calls = {"n": 0}

    def loss(out, y):
        calls["n"] += 1
        if calls["n"] == len(loader) + 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return nn.CrossEntropyLoss()(out, y)

    previous = signal.getsignal(signal.SIGTERM)
    with _SigtermGuard():
        history = fit(model, loader, None, opt, loss, epochs=3, checkpoint_dir=str(tmp_path), progress=False)
    assert history.interrupted and history.signal == "SIGTERM"
    assert read_checkpoint(tmp_path / "interrupted.safetensors")[0]["epoch"] == 1
    assert signal.getsignal(signal.SIGTERM) is previous


def test_cli_sigterm_exits_143_after_saving(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "xpnet", "train", *SMALL, "--epochs", "1000", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.safetensors").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # the first epoch's checkpoint: training is under way
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr
    assert "interrupted (SIGTERM): checkpoint saved to" in stdout
    assert (out / "interrupted.safetensors").exists()


def test_fit_asks_the_schedule_what_it_needs_not_its_class_name(backend):
    model, opt, loader = _setup()

    class PerBatch:  # any object with the attributes: stepped once per batch, without a metric
        interval, needs_metric, replayable = "step", False, False

        def __init__(self):
            self.steps = 0

        def step(self, *metric):
            assert not metric
            self.steps += 1

        def state_dict(self):
            return {"steps": self.steps}

    class OnMetric(PerBatch):
        interval, needs_metric = "epoch", True

        def step(self, *metric):
            assert len(metric) == 1 and np.isfinite(metric[0])
            self.steps += 1

    per_batch, on_metric = PerBatch(), OnMetric()
    fit(model, loader, loader, opt, nn.CrossEntropyLoss(), epochs=2, scheduler=per_batch, progress=False)
    fit(model, loader, loader, opt, nn.CrossEntropyLoss(), epochs=2, scheduler=on_metric, progress=False)
    assert per_batch.steps == 2 * len(loader) and on_metric.steps == 2
