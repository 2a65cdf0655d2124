"""Checkpoints: safetensors files with a JSON header, written atomically, read as hostile input.

Layout of one file:
  tensors   ``model.<key>`` for every state_dict entry, ``optimizer.<param>.<name>`` for every
            array in the optimizer state;
  metadata  ``xpnet`` -> a JSON document: format version, epoch, model name and options,
            optimizer class, param groups and scalar state, scheduler state, RNG states, history.
Nothing is ever unpickled. A save goes through ``xpnet.safe_io.atomic_write_bytes``: a temporary
file ``.tmp-XXXXXXXX.part`` in the same folder, fsynced and renamed over the target (a link planted
there is replaced, never followed), so a crash mid-save leaves the previous checkpoint intact;
``remove_stale_temporaries`` clears what a killed save left behind.

Reading accepts regular files only, reads the 8-byte header length, checks the header (at most
``MAX_HEADER_BYTES``), every tensor entry and the file size (``xpnet.safetensors_file``) and the
xpnet document (``check_header``) before the body is read, then reads exactly the body. Loading
checks every tensor and state against the model, optimizer and scheduler first, then applies them
as one transaction: on any failure model, optimizer, scheduler and RNG are left exactly as they were.
Every failure is a CheckpointError whose one-line message names the file and the field.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os

from ..backends import backend_name_of, to_numpy
from ..safe_io import (TEMP_PATTERN, NotARegularFileError, ShortRead, atomic_write_bytes, open_regular_fd, read_exactly,
                       remove_stale_temporaries)
from ..safetensors_file import (MAX_HEADER_BYTES, SafetensorsFileError, array_from_body, loads_json,
                                parse_file_header)
from .checkpoint_validate import (FORMAT, VERSION, CheckpointError, check_header, check_model_state,
                                  check_optimizer_state, check_scheduler_state, fail, nonfinite_report,
                                  optimizer_state_from, restore_keys)

__all__ = ["CheckpointError", "FORMAT", "VERSION", "MAX_HEADER_BYTES", "TEMP_PATTERN", "atomic_write_bytes",
           "assert_finite_state", "check_header", "load_checkpoint", "nonfinite_report", "read_checkpoint",
           "read_checkpoint_header", "remove_stale_temporaries", "save_checkpoint"]


def _split_optimizer_state(opt_state: dict):
    tensors, scalars = {}, {}
    for index, entry in opt_state.get("state", {}).items():
        for name, value in entry.items():
            if backend_name_of(value) is not None or hasattr(value, "data") and backend_name_of(value.data) is not None:
                tensors[f"optimizer.{index}.{name}"] = to_numpy(value)
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, scalars


def _jsonable(value):
    """Plain JSON types for scheduler/optimizer scalars (tuples become lists; arrays become numbers)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if backend_name_of(value) is not None:
        return to_numpy(value).tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"checkpoint: cannot store {type(value).__name__} in the JSON header")


# ------------------------------------------------------------------------------------- writing
def save_checkpoint(path, model, optimizer=None, scheduler=None, epoch=0, extra=None) -> str:
    """Save model, optimizer, scheduler, RNG states and ``extra`` (JSON-able) to ``path``.

    Nothing checks for NaN/inf here (``load_checkpoint`` refuses them): call ``nonfinite_report``
    or ``assert_finite_state`` first to keep a diverged state off the disk.
    """
    from safetensors.numpy import save

    from ..backends import get_backend

    tensors = {f"model.{k}": to_numpy(v) for k, v in model.state_dict().items()}
    header = {
        "format": FORMAT,
        "version": VERSION,
        "epoch": int(epoch),
        "model": {"name": getattr(model, "model_name", type(model).__name__),
                  "options": getattr(model, "model_options", {})},
        "backend": str(get_backend()),
        "rng": _jsonable(get_backend().rng.get_state()),
    }
    if optimizer is not None:
        state = optimizer.state_dict()
        opt_tensors, scalars = _split_optimizer_state(state)
        tensors.update(opt_tensors)
        header["optimizer"] = {"class": type(optimizer).__name__,
                               "param_groups": _jsonable(state["param_groups"]),
                               "scalars": _jsonable(scalars),
                               "indices": sorted(int(i) for i in state.get("state", {}))}
    if scheduler is not None:
        header["scheduler"] = {"class": type(scheduler).__name__, "state": _jsonable(scheduler.state_dict())}
    if extra:
        header["extra"] = _jsonable(extra)
    tensors = {k: (v if v.flags["C_CONTIGUOUS"] else v.copy()) for k, v in tensors.items()}
    payload = save(tensors, metadata={"xpnet": json.dumps(header)})
    atomic_write_bytes(str(path), payload)
    return str(path)


# ------------------------------------------------------------------------------------- reading

def _open_regular(path):
    """(fd, size) of ``path`` opened read-only, non-blocking; only regular files get this far."""
    try:
        return open_regular_fd(path, "checkpoint")
    except NotARegularFileError as exc:
        raise CheckpointError(f"checkpoint {path!r} is not a regular file (it is {exc.kind}); "
                              f"give a .safetensors file") from None
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path!r} does not exist") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise CheckpointError(f"checkpoint {path!r} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None


def _read_exactly(fd, count, path, what):
    try:
        return read_exactly(fd, count)
    except ShortRead as short:
        raise fail(path, f"{what}: the file ended after {short.done} of {count} bytes (truncated while reading?)") \
            from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path!r} cannot be read: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _as_checkpoint_error(path):
    """A safetensors format error inside the block, raised as the CheckpointError naming ``path``."""
    try:
        yield
    except CheckpointError:
        raise
    except SafetensorsFileError as exc:
        raise fail(path, exc.reason) from None


def _read_head(fd, size, path):
    """(header, entries, body size) from the first 8 + N bytes; nothing else is read."""
    if size < 8:
        raise fail(path, f"file is {size} bytes, too short for a safetensors file (8 bytes of header length)")
    header_len = int.from_bytes(_read_exactly(fd, 8, path, "header length"), "little")
    if header_len > MAX_HEADER_BYTES:
        raise fail(path, f"header length field says {header_len} bytes, more than the limit of {MAX_HEADER_BYTES}")
    if 8 + header_len > size:
        raise fail(path, f"header length field says {header_len} bytes but the file is {size} bytes (truncated)")
    raw = _read_exactly(fd, header_len, path, "header")
    with _as_checkpoint_error(path):
        entries, metadata, body_size = parse_file_header(raw, path, header_len, size)
        if "xpnet" not in metadata:
            raise CheckpointError(f"{path!r} is a safetensors file but not an xpnet checkpoint (no xpnet header)")
        header = loads_json(metadata["xpnet"], path, "header field '__metadata__.xpnet'")
    check_header(header, entries, path)
    return header, entries, body_size


def read_checkpoint_header(path):
    """(header, {name: {'dtype', 'shape', 'begin', 'end'}}) of a checkpoint, checked as by
    ``read_checkpoint``, without reading the tensors (cheap for any file size)."""
    path = os.fsdecode(path)
    fd, size = _open_regular(path)
    try:
        header, entries, _ = _read_head(fd, size, path)
    finally:
        os.close(fd)
    return header, entries


def read_checkpoint(path):
    """(header dict, {name: NumPy array}) of a checkpoint file; CheckpointError on any problem."""
    path = os.fsdecode(path)
    fd, size = _open_regular(path)
    try:
        header, entries, body_size = _read_head(fd, size, path)
        body = _read_exactly(fd, body_size, path, "tensor data")
    finally:
        os.close(fd)
    with _as_checkpoint_error(path):
        tensors = {name: array_from_body(body, entry, name, path) for name, entry in entries.items()}
    return header, tensors


# ------------------------------------------------------------------------------------- loading
def assert_finite_state(model, optimizer=None, where: str = "") -> None:
    """Raise FloatingPointError naming the first NaN/inf parameter, buffer, optimizer state array
    or param-group number (see ``nonfinite_report``); ``where`` prefixes the message."""
    bad = nonfinite_report(model, optimizer)
    if bad:
        raise FloatingPointError(f"{where}: {bad}" if where else bad)


def _scheduler_dicts(scheduler):
    found = [scheduler]
    for inner in getattr(scheduler, "_schedulers", ()) or ():
        found += _scheduler_dicts(inner)
    return found


class _Snapshot:
    """Model, optimizer, scheduler and RNG as they are now, to put back after a failed load."""

    def __init__(self, model, optimizer, scheduler, rng):
        # every parameter/buffer slot with its object and array: put back as they were, without
        # calling anything that could fail again (load_state_dict replaces arrays, never writes in place)
        from ..autodiff.tensor import Tensor

        self.slots = []
        for m in model.modules():
            for store in (m._parameters, m._buffers):
                for name, value in store.items():
                    self.slots.append((store, name, value, value.data if isinstance(value, Tensor) else None))
        self.optimizer = optimizer
        if optimizer is not None:  # load_state_dict assigns new objects: keeping these restores exactly
            self.opt_state, self.opt_groups = optimizer.state, optimizer.param_groups
            self.opt_group_items = [dict(g) for g in optimizer.param_groups]
        self.schedulers = [(s, dict(s.__dict__)) for s in _scheduler_dicts(scheduler)] if scheduler is not None else []
        self.rng = rng
        self.rng_state = copy.deepcopy(rng.get_state()) if rng is not None else None

    def restore(self):
        for store, name, value, data in self.slots:
            store[name] = value
            if data is not None and value.data is not data:
                value.data = data
        if self.optimizer is not None:
            self.optimizer.state, self.optimizer.param_groups = self.opt_state, self.opt_groups
            for group, items in zip(self.opt_groups, self.opt_group_items):
                group.clear()
                group.update(items)
        for obj, attrs in self.schedulers:
            obj.__dict__.clear()
            obj.__dict__.update(attrs)
        if self.rng is not None:
            self.rng.set_state(self.rng_state)


def _backend_name(label) -> str:
    return str(label).partition(":")[0]


def load_checkpoint(path, model, optimizer=None, scheduler=None, restore_rng=True) -> dict:
    """Load a checkpoint into ``model`` (and optimizer, scheduler, RNG). Returns the JSON header.

    Everything is validated before anything changes (keys, shapes, dtype kinds, NaN/inf, optimizer
    groups and state, scheduler fields), then applied as one transaction: on any failure
    CheckpointError names the file and the field, and model, optimizer, scheduler and RNG are left
    as they were. An RNG state from another backend's generator is skipped (weights still load).
    """
    from ..backends import get_backend

    path = os.fsdecode(path)
    header, tensors = read_checkpoint(path)
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    check_model_state(path, header, model, model_sd)
    opt_sd = None
    if optimizer is not None and "optimizer" in header:
        opt_sd = optimizer_state_from(header["optimizer"], tensors)
        check_optimizer_state(path, optimizer, header["optimizer"], opt_sd)
    load_scheduler = scheduler is not None and "scheduler" in header
    if load_scheduler:
        check_scheduler_state(path, scheduler, header["scheduler"])
    rng = get_backend().rng if restore_rng and "rng" in header else None
    snapshot = _Snapshot(model, optimizer, scheduler if load_scheduler else None, rng)
    stage = "model"
    try:
        if rng is not None:
            stage = "rng"
            try:
                rng.set_state(copy.deepcopy(header["rng"]))
            except Exception as exc:  # noqa: BLE001 -- anything a generator refuses
                rng.set_state(copy.deepcopy(snapshot.rng_state))
                saved_backend = header.get("backend")
                if not isinstance(saved_backend, str) or _backend_name(saved_backend) == get_backend().name:
                    raise fail(path, f"header field 'rng' is not a valid {get_backend().name} generator state "
                                     f"({type(exc).__name__}: {exc})") from None
                # a checkpoint from another backend's generator: weights load, the stream restarts
        if opt_sd is not None:
            stage = "optimizer"
            optimizer.load_state_dict(opt_sd)
        if load_scheduler:
            stage = "scheduler"
            scheduler.load_state_dict(restore_keys(copy.deepcopy(header["scheduler"]["state"]), scheduler.state_dict()))
        stage = "model"
        model.load_state_dict(model_sd)
    except BaseException as exc:
        snapshot.restore()
        if isinstance(exc, CheckpointError) or not isinstance(exc, Exception):
            raise
        first = (str(exc).splitlines() or [""])[0]
        raise fail(path, f"the {stage} state could not be applied ({type(exc).__name__}: {first}); model, "
                         "optimizer, scheduler and RNG were left as they were") from exc
    return header
