"""Checkpoints as hostile input: file types, layout, header fields, states, transactions, writes.

Every test builds its files in tmp_path in milliseconds; the ones that would block or read without
end on a broken reader run under a deadline, so a regression fails instead of hanging.
"""

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import xpnet
from xpnet import nn, optim
from xpnet.train import checkpoint as ck
from xpnet.train.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint

from conftest import to_np


# ------------------------------------------------------------------------------------------ helpers
@contextlib.contextmanager
def deadline(seconds=5):
    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _setup(seed=0, steps=1):
    """A small model, SGD with momentum and StepLR, after ``steps`` training steps."""
    xpnet.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    gen = np.random.default_rng(seed)
    x = xpnet.tensor(gen.normal(size=(4, 1, 1, 8)).astype(np.float32))
    y = xpnet.tensor(np.array([0, 1, 2, 1]))
    for _ in range(steps):
        loss = nn.CrossEntropyLoss()(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model, opt, sched


def _saved(tmp_path, name="c.safetensors", **kw):
    model, opt, sched = _setup(**kw)
    return save_checkpoint(tmp_path / name, model, opt, sched, epoch=1, extra={"history": {"epoch": [0]}})


def _parts(path):
    """(safetensors header dict, xpnet header dict, body bytes) of a file we wrote."""
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    doc = json.loads(raw[8:8 + n])
    return doc, json.loads(doc["__metadata__"]["xpnet"]), raw[8 + n:]


def _raw(doc, body=b""):
    head = json.dumps(doc).encode()
    return len(head).to_bytes(8, "little") + head + body


def _rewrite(path, change_header=None, change_doc=None, body=None):
    doc, header, old_body = _parts(path)
    if change_header:
        change_header(header)
    doc["__metadata__"]["xpnet"] = json.dumps(header)
    if change_doc:
        change_doc(doc)
    with open(path, "wb") as f:
        f.write(_raw(doc, old_body if body is None else body))
    return str(path)


def _craft(path, tensors, header):
    """A checkpoint holding exactly ``tensors`` (NumPy) with xpnet header ``header``."""
    from safetensors.numpy import save

    open(path, "wb").write(save(tensors, metadata={"xpnet": json.dumps(header)}))
    return str(path)


def _everything(model, opt, sched):
    sd = opt.state_dict()
    return ({k: to_np(v).copy() for k, v in model.state_dict().items()},
            [{k: v for k, v in g.items()} for g in sd["param_groups"]],
            {i: {k: to_np(v).copy() if hasattr(v, "shape") else v for k, v in e.items()}
             for i, e in sd["state"].items()},
            sched.state_dict(), json.dumps(xpnet.get_backend().rng.get_state()))


def _assert_unchanged(before, after):
    for k in before[0]:
        np.testing.assert_array_equal(after[0][k], before[0][k], err_msg=k)
    assert after[1] == before[1]
    assert after[2].keys() == before[2].keys()
    for i in before[2]:
        for k, v in before[2][i].items():
            np.testing.assert_array_equal(after[2][i][k], v)
    assert after[3] == before[3]
    assert after[4] == before[4]


def _refused(path, *fragments, loader=read_checkpoint, **kw):
    with pytest.raises(CheckpointError) as info:
        loader(path, **kw)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ------------------------------------------------------------------------------- 1: file types, layout
def test_dev_zero_is_refused_without_reading():
    with deadline():
        _refused("/dev/zero", "not a regular file", "character device")


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with deadline():
        _refused(fifo, "not a regular file", "FIFO")


def test_directory_is_refused_with_a_checkpoint_error(tmp_path):
    folder = tmp_path / "dir.safetensors"
    folder.mkdir()
    _refused(folder, "not a regular file", "directory")


def test_symlink_to_dev_zero_is_refused(tmp_path):
    link = tmp_path / "zero.safetensors"
    os.symlink("/dev/zero", link)
    with deadline():
        _refused(link, "not a regular file", "character device")


def test_truncated_and_padded_files_name_the_sizes(tmp_path):
    path = _saved(tmp_path)
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    body = len(raw) - 8 - n
    open(path, "wb").write(raw[:-5])
    _refused(path, f"file is {len(raw) - 5} bytes", f"8 + {n} + {body} = {len(raw)} bytes", "truncated")
    open(path, "wb").write(raw + b"\0" * 16)
    _refused(path, f"file is {len(raw) + 16} bytes", "16 bytes of padding")
    open(path, "wb").write(raw[:5])
    _refused(path, "file is 5 bytes, too short")


def test_a_huge_header_length_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    _refused(path, f"header length field says {2**40} bytes", f"limit of {ck.MAX_HEADER_BYTES}")
    path.write_bytes((1000).to_bytes(8, "little") + b"{}")
    _refused(path, "header length field says 1000 bytes but the file is 10 bytes")


def _entry_case(tmp_path, change):
    path = _saved(tmp_path)
    return _rewrite(path, change_doc=change)


@pytest.mark.parametrize("change, fragments", [
    (lambda d: d["model.1.weight"].update(dtype="Q7"), ["tensor 'model.1.weight'", "unknown dtype 'Q7'"]),
    (lambda d: d["model.1.weight"].update(dtype="BF16"), ["tensor 'model.1.weight'", "BF16"]),
    (lambda d: d["model.1.weight"].update(shape=[16, -8]), ["tensor 'model.1.weight'", "shape [16, -8]"]),
    (lambda d: d["model.1.weight"].update(shape=[16, 8.0]), ["tensor 'model.1.weight'", "shape [16, 8.0]"]),
    (lambda d: d["model.1.weight"].update(shape=[16, 9]), ["tensor 'model.1.weight'", "take 576 bytes"]),
    (lambda d: d["model.1.weight"].update(junk=1), ["tensor 'model.1.weight'", "exactly"]),
    (lambda d: d.update({"__metadata__": {"xpnet": 3}}), ["'__metadata__'"]),
])
def test_tensor_entries_are_checked(tmp_path, change, fragments):
    _refused(_entry_case(tmp_path, change), *fragments)


def test_a_gap_or_an_overlap_between_tensors_is_refused(tmp_path):
    path = tmp_path / "gap.safetensors"
    doc = {"__metadata__": {"xpnet": "{}"}, "model.a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
    path.write_bytes(_raw(doc, b"\0" * 8))
    _refused(path, "tensor 'model.a' starts at body byte 4", "leaves a gap")
    doc["model.a"]["data_offsets"] = [0, 4]
    doc["model.b"] = {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}
    path.write_bytes(_raw(doc, b"\0" * 8))
    _refused(path, "tensor 'model.b' starts at body byte 2", "overlaps the previous one (which ends at 4)")


def test_the_header_is_checked_before_the_body_is_read(tmp_path, monkeypatch):
    """A 2 GiB sparse file (a few KB on disk) with a bad entry costs a header read, not the body."""
    path = _entry_case(tmp_path, lambda d: d["model.1.weight"].update(dtype="Q7"))
    head = 8 + int.from_bytes(open(path, "rb").read(8), "little")
    with open(path, "r+b") as f:
        f.truncate(2**31)
    read = []
    real_readv, real_read = os.readv, os.read
    monkeypatch.setattr(os, "readv", lambda fd, bufs: read.append(sum(map(len, bufs))) or real_readv(fd, bufs))
    monkeypatch.setattr(os, "read", lambda fd, n: read.append(n) or real_read(fd, n))
    with deadline():
        _refused(path, "unknown dtype 'Q7'")
    assert sum(read) <= head


def test_duplicate_keys_in_the_header_are_refused(tmp_path):
    path = _saved(tmp_path)
    _, header, body = _parts(path)
    text = json.dumps(header).replace('"epoch": 1', '"epoch": 1, "epoch": 7')
    doc = _parts(path)[0]
    doc["__metadata__"]["xpnet"] = text
    open(path, "wb").write(_raw(doc, body))
    _refused(path, "'__metadata__.xpnet'", "duplicate key 'epoch'")


def test_read_checkpoint_header_reads_no_tensor_data(tmp_path):
    path = _saved(tmp_path)
    header, entries = ck.read_checkpoint_header(path)
    assert header["epoch"] == 1 and entries["model.1.weight"]["shape"] == [16, 8]


# ------------------------------------------------------------------------------- 2: header fields
@pytest.mark.parametrize("change, fragments", [
    (lambda h: h.update(model=["mlp"]), ["header field 'model' is a list", "expected an object"]),
    (lambda h: h["model"].update(name=7), ["header field 'model.name' is an int"]),
    (lambda h: h["model"].update(options=[]), ["header field 'model.options' is a list"]),
    (lambda h: h.update(epoch=-1), ["header field 'epoch' is -1"]),
    (lambda h: h.update(epoch=True), ["header field 'epoch' is True"]),
    (lambda h: h.update(epoch="3"), ["header field 'epoch' is '3'"]),
    (lambda h: h.update(version=99), ["header field 'version' is 99"]),
    (lambda h: h.update(optimizer=[1]), ["header field 'optimizer' is a list"]),
    (lambda h: h["optimizer"].update(param_groups={}), ["header field 'optimizer.param_groups' is an object"]),
    (lambda h: h["optimizer"]["param_groups"][0].update(lr=float("nan")),
     ["header field 'optimizer.param_groups[0].lr' is nan"]),
    (lambda h: h["optimizer"]["param_groups"][0].update(lr="0.1"), ["'optimizer.param_groups[0].lr'"]),
    (lambda h: h["optimizer"]["param_groups"][0].update(params=[0, 0, 1, 2]), ["'optimizer.param_groups[*].params'"]),
    (lambda h: h["optimizer"].update(indices=[0, 99]), ["header field 'optimizer.indices'"]),
    (lambda h: h["optimizer"]["scalars"].update({"0": {"step": "x"}}), ["'optimizer.scalars.0.step'"]),
    (lambda h: h.update(scheduler={"class": "StepLR", "state": [1]}), ["header field 'scheduler.state' is a list"]),
    (lambda h: h["scheduler"]["state"].update(gamma=float("nan")), ["header field 'scheduler.state.gamma' is nan"]),
    (lambda h: h.update(rng=[1, 2]), ["header field 'rng' is a list"]),
    (lambda h: h.update(extra=[]), ["header field 'extra' is a list"]),
    (lambda h: h["extra"].update(history="x"), ["header field 'extra.history' is a string"]),
    (lambda h: h["extra"].update(history={"epoch": [0, "a"]}), ["'extra.history.epoch'"]),
    (lambda h: h["extra"].update(loader={"epoch": "x", "seed": 0}), ["header field 'extra.loader.epoch' is 'x'"]),
    (lambda h: h.update(backend=3), ["header field 'backend' is an int"]),
])
def test_header_fields_are_typed_and_named(tmp_path, change, fragments):
    _refused(_rewrite(_saved(tmp_path), change_header=change), *fragments)


def _registry_checkpoint(tmp_path, **options):
    from xpnet import models

    model = models.create("mlp", num_classes=3, in_channels=1, input_size=8, hidden=(16,))
    return save_checkpoint(tmp_path / "mlp.safetensors", model, epoch=1)


@pytest.mark.parametrize("options, fragments", [
    ({"num_classes": 10**7}, ["'model.options.num_classes' is 10000000", "at most 65536"]),
    ({"num_classes": 7}, ["'model.options.num_classes' is 7", "no model tensor in the file has 7 rows"]),
    ({"in_channels": 0}, ["'model.options.in_channels' is 0", "positive int"]),
    ({"in_channels": True}, []),  # a bool is not a size: accepted as a flag, and the model decides
    ({"input_size": -3}, ["'model.options.input_size' is -3"]),
    ({"input_size": 4000}, ["'model.options.input_size' = 4000", "and more than the largest model tensor"]),
    ({"hidden": [60000]}, ["'model.options.hidden' is 60000", "no model tensor in the file has a dimension"]),
    ({"hidden": [[16]]}, ["'model.options.hidden' is a list"]),
    ({"dropout": float("inf")}, ["'model.options.dropout' is inf"]),
])
def test_size_options_are_checked_against_the_tensors(tmp_path, options, fragments):
    path = _registry_checkpoint(tmp_path)
    assert read_checkpoint(path)[0]["model"]["options"]["num_classes"] == 3
    _rewrite(path, change_header=lambda h: h["model"]["options"].update(options))
    if not fragments:
        read_checkpoint(path)
        return
    _refused(path, *fragments)


def test_check_header_is_public_and_takes_arrays(tmp_path):
    header, tensors = read_checkpoint(_registry_checkpoint(tmp_path))
    assert ck.check_header(header, tensors, "x") is header
    header["model"]["options"]["num_classes"] = 10**7
    with pytest.raises(CheckpointError, match="num_classes"):
        ck.check_header(header, tensors, "x")


# ------------------------------------------------------------------------------- 3: loading
def test_an_int32_tensor_for_a_float32_weight_is_refused(tmp_path):
    header, tensors = read_checkpoint(_saved(tmp_path))
    tensors["model.1.weight"] = tensors["model.1.weight"].astype(np.int32)
    path = _craft(tmp_path / "int.safetensors", tensors, header)
    model, opt, sched = _setup(seed=3)
    before = _everything(model, opt, sched)
    _refused(path, "model tensor '1.weight' has dtype int32 but the model's entry is float32",
             loader=load_checkpoint, model=model, optimizer=opt, scheduler=sched)
    _assert_unchanged(before, _everything(model, opt, sched))


def test_integer_buffers_keep_their_kind(tmp_path):
    xpnet.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3))
    header, tensors = read_checkpoint(save_checkpoint(tmp_path / "bn.safetensors", model))
    int_key = next(k for k, v in tensors.items() if v.dtype.kind == "i")
    load_checkpoint(_craft(tmp_path / "ok.safetensors", tensors, header), model)  # int into int: fine
    tensors[int_key] = tensors[int_key].astype(np.float32)
    _refused(_craft(tmp_path / "f.safetensors", tensors, header), f"model tensor {int_key[6:]!r} has dtype float32",
             loader=load_checkpoint, model=model)


@pytest.mark.parametrize("key, fragment", [
    ("model.1.weight", "model tensor '1.weight' holds 3 NaN/inf values"),
    ("optimizer.0.momentum_buffer", "optimizer tensor 'optimizer.0.momentum_buffer' holds 3 NaN/inf values"),
])
def test_nan_tensors_are_refused_naming_the_key(tmp_path, key, fragment):
    header, tensors = read_checkpoint(_saved(tmp_path))
    tensors[key].reshape(-1)[:3] = [np.nan, np.inf, -np.inf]
    path = _craft(tmp_path / "nan.safetensors", tensors, header)
    model, opt, sched = _setup(seed=3)
    before = _everything(model, opt, sched)
    _refused(path, fragment, loader=load_checkpoint, model=model, optimizer=opt, scheduler=sched)
    _assert_unchanged(before, _everything(model, opt, sched))


@pytest.mark.parametrize("change, fragments", [
    (lambda h, t: h["optimizer"]["param_groups"][0].update(momentum=-1.0),
     ["header field 'optimizer.param_groups[0]' is not valid for SGD", "momentum"]),
    (lambda h, t: h["optimizer"]["param_groups"][0].update(nesterov=3), ["'optimizer.param_groups[0].nesterov' is 3"]),
    (lambda h, t: h["optimizer"].update(**{"class": "Adam"}),
     ["'optimizer.class' is 'Adam' but the optimizer is a SGD"]),
    (lambda h, t: t.update({"optimizer.0.momentum_buffer": np.zeros((2, 2), np.float32)}),
     ["optimizer tensor 'optimizer.0.momentum_buffer' has shape (2, 2), the parameter has (16, 8)"]),
    (lambda h, t: t.update({"optimizer.0.momentum_buffer": np.zeros((16, 8), np.int32)}),
     ["optimizer tensor 'optimizer.0.momentum_buffer' has dtype int32"]),
    (lambda h, t: h["scheduler"].update(**{"class": "CosineAnnealingLR"}),
     ["'scheduler.class' is 'CosineAnnealingLR' but the scheduler is a StepLR"]),
    (lambda h, t: h["scheduler"]["state"].update(step=3), ["'scheduler.state.step' is not a field of StepLR"]),
    (lambda h, t: h["scheduler"]["state"].update(last_epoch="1"), ["'scheduler.state.last_epoch' is '1'"]),
    (lambda h, t: h["scheduler"]["state"].update(base_lrs=[0.1, 0.2]), ["'scheduler.state.base_lrs'"]),
    (lambda h, t: h.update(rng={"bit_generator": "PCG64", "state": {"state": -5, "inc": 1}}),
     ["header field 'rng' is not a valid numpy generator state"]),
])
def test_optimizer_scheduler_and_rng_states_are_checked_and_nothing_changes(tmp_path, change, fragments):
    header, tensors = read_checkpoint(_saved(tmp_path))
    change(header, tensors)
    path = _craft(tmp_path / "bad.safetensors", tensors, header)
    with xpnet.use_backend("numpy"):
        model, opt, sched = _setup(seed=3)
        before = _everything(model, opt, sched)
        _refused(path, *fragments, loader=load_checkpoint, model=model, optimizer=opt, scheduler=sched)
        _assert_unchanged(before, _everything(model, opt, sched))


@pytest.mark.parametrize("make", ["multistep", "plateau", "sequential"])
def test_schedulers_round_trip_and_continue_identically(tmp_path, make):
    S = optim.lr_scheduler
    build = {"multistep": lambda o: S.MultiStepLR(o, [2, 3], gamma=0.5),
             "plateau": lambda o: S.ReduceLROnPlateau(o, patience=0),  # holds best = inf
             "sequential": lambda o: S.SequentialLR(o, [S.LinearLR(o, total_iters=2), S.StepLR(o, 1)], [2])}[make]

    def step(s):
        s.step(1.0) if make == "plateau" else s.step()

    model, opt, _ = _setup()
    sched = build(opt)
    step(sched)
    path = save_checkpoint(tmp_path / "s.safetensors", model, opt, sched, epoch=1)
    model2, opt2, _ = _setup(seed=3)
    sched2 = build(opt2)
    load_checkpoint(path, model2, opt2, sched2)
    for _ in range(4):
        step(sched)
        step(sched2)
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_an_adam_state_without_its_second_moment_is_refused(tmp_path):
    model, _, _ = _setup()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    loss = nn.CrossEntropyLoss()(model(xpnet.tensor(np.ones((2, 1, 1, 8), np.float32))), xpnet.tensor(np.array([0, 1])))
    loss.backward()
    opt.step()
    header, tensors = read_checkpoint(save_checkpoint(tmp_path / "a.safetensors", model, opt))
    del tensors["optimizer.0.exp_avg_sq"]
    path = _craft(tmp_path / "b.safetensors", tensors, header)
    model2, _, _ = _setup(seed=3)
    opt2 = optim.Adam(model2.parameters(), lr=1e-3)
    _refused(path, "optimizer state of parameter 0 lacks ['exp_avg_sq'] (needed by Adam)",
             loader=load_checkpoint, model=model2, optimizer=opt2)


@pytest.mark.parametrize("broken", ["scheduler", "model", "optimizer"])
def test_an_unexpected_failure_while_applying_rolls_everything_back(tmp_path, monkeypatch, broken):
    path = _saved(tmp_path)
    model, opt, sched = _setup(seed=3)
    xpnet.manual_seed(42)
    before = _everything(model, opt, sched)
    target = {"scheduler": sched, "model": model, "optimizer": opt}[broken]
    real = target.load_state_dict

    def half_then_fail(state, *a, **kw):
        real(state, *a, **kw)  # the change happens, then something goes wrong
        raise RuntimeError("device lost")

    monkeypatch.setattr(target, "load_state_dict", half_then_fail)
    message = _refused(path, f"the {broken} state could not be applied (RuntimeError: device lost)",
                       "left as they were", loader=load_checkpoint, model=model, optimizer=opt, scheduler=sched)
    monkeypatch.undo()
    _assert_unchanged(before, _everything(model, opt, sched))
    assert message


def test_an_rng_state_of_another_backend_is_skipped_and_weights_load(tmp_path):
    header, tensors = read_checkpoint(_saved(tmp_path))
    header["backend"] = "cupy:0"
    header["rng"] = {"host": header["rng"], "device": {"key": 1, "counter": 2}}
    path = _craft(tmp_path / "gpu.safetensors", tensors, header)
    with xpnet.use_backend("numpy"):
        model, opt, sched = _setup(seed=3)
        rng_before = json.dumps(xpnet.get_backend().rng.get_state())
        load_checkpoint(path, model, opt, sched)
        assert json.dumps(xpnet.get_backend().rng.get_state()) == rng_before
        np.testing.assert_array_equal(to_np(model.state_dict()["1.weight"]), tensors["model.1.weight"])
    header["backend"] = "numpy:cpu"  # the same backend: a malformed state is an error
    _craft(path, tensors, header)
    with xpnet.use_backend("numpy"):
        _refused(path, "header field 'rng' is not a valid numpy generator state", loader=load_checkpoint,
                 model=_setup(seed=3)[0])


def test_a_model_on_another_backend_loads(tmp_path):
    path = _saved(tmp_path)
    with xpnet.use_backend("array_api_strict"):
        model, opt, sched = _setup(seed=5)
        load_checkpoint(path, model, opt, sched)
    np.testing.assert_array_equal(to_np(model.state_dict()["1.weight"]), read_checkpoint(path)[1]["model.1.weight"])


# ------------------------------------------------------------------------------- 4: finite state
def test_nonfinite_report_and_assert_finite_state_name_the_first_offender():
    model, opt, sched = _setup()
    assert ck.nonfinite_report(model, opt) is None
    ck.assert_finite_state(model, opt)
    opt.state[model[3].weight]["momentum_buffer"][0, 0] = np.inf
    assert ck.nonfinite_report(model, opt) == ("optimizer state 'momentum_buffer' of parameter '3.weight' "
                                               "holds 1 NaN/inf values")
    assert ck.nonfinite_report(model) is None
    opt.param_groups[0]["lr"] = float("nan")
    assert ck.nonfinite_report(model, opt) == "optimizer param_groups[0]['lr'] is nan"
    w = to_np(model[1].weight.data).copy()
    w[:2, 0] = np.nan
    model[1].weight.data = xpnet.tensor(w).data
    assert ck.nonfinite_report(model, opt) == "parameter '1.weight' holds 2 NaN/inf values"
    with pytest.raises(FloatingPointError, match=r"^before saving: parameter '1.weight' holds 2 NaN/inf values$"):
        ck.assert_finite_state(model, opt, where="before saving")


def test_nonfinite_report_checks_buffers(backend):
    xpnet.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    var = to_np(model[1].running_var).copy()
    var[1] = np.nan
    model.load_state_dict({**model.state_dict(), "1.running_var": var})
    assert ck.nonfinite_report(model) == "buffer '1.running_var' holds 1 NaN/inf values"


# ------------------------------------------------------------------------------- 5: writing
def test_remove_stale_temporaries_removes_only_regular_part_files(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    outside = tmp_path / "precious.part"
    outside.write_text("precious")
    (folder / ".tmp-abcd1234.part").write_bytes(b"\0" * 100)
    os.symlink(outside, folder / ".tmp-link1234.part")
    (folder / ".tmp-dir01234.part").mkdir()
    for name in ("checkpoint.safetensors", "x.tmp-abcd1234.part", ".tmp-abcd1234.partial", ".tmp-.part"):
        (folder / name).write_text("keep")
    assert ck.remove_stale_temporaries(str(folder)) == [os.path.join(str(folder), ".tmp-abcd1234.part")]
    assert sorted(os.listdir(folder)) == sorted([".tmp-link1234.part", ".tmp-dir01234.part", "checkpoint.safetensors",
                                                 "x.tmp-abcd1234.part", ".tmp-abcd1234.partial", ".tmp-.part"])
    assert outside.read_text() == "precious"
    assert ck.remove_stale_temporaries(str(tmp_path / "missing")) == []


def test_a_save_killed_with_sigkill_leaves_a_temporary_that_is_then_removed(tmp_path):
    script = ("import os, sys, time\n"
              "from xpnet.train import checkpoint as ck\n"
              "def stall(src, dst):\n"
              "    print('writing', flush=True); time.sleep(60)\n"
              "os.replace = stall\n"
              "ck.atomic_write_bytes(sys.argv[1], b'x' * 4096)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(xpnet.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "c.safetensors")], stdout=subprocess.PIPE,
                            env=env)
    try:
        with deadline(30):
            assert proc.stdout.readline() == b"writing\n"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    left = [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    assert len(left) == 1 and ck.TEMP_PATTERN.fullmatch(left[0])
    assert ck.remove_stale_temporaries(tmp_path) == [os.path.join(str(tmp_path), left[0])]
    assert os.listdir(tmp_path) == []


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"precious")
    os.symlink(outside, folder / "checkpoint.safetensors")
    path = _saved(folder, name="checkpoint.safetensors")
    assert outside.read_bytes() == b"precious"
    assert not os.path.islink(path) and read_checkpoint(path)[0]["epoch"] == 1


@pytest.mark.parametrize("fails", ["fsync", "replace"])
def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, fails):
    path = _saved(tmp_path)
    original = open(path, "rb").read()

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    model, opt, sched = _setup()
    monkeypatch.setattr(os, fails, full)
    with pytest.raises(OSError) as info:
        save_checkpoint(path, model, opt, sched, epoch=2)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert info.value.strerror == f"cannot write c.safetensors in {tmp_path}: No space left on device"
    assert open(path, "rb").read() == original
    assert os.listdir(tmp_path) == ["c.safetensors"]
