"""Checkpoints: safetensors files with a JSON header, written atomically.

Layout of one file:
  tensors   ``model.<key>`` for every state_dict entry, ``optimizer.<param>.<name>`` for every
            array in the optimizer state;
  metadata  ``xpnet`` -> a JSON document: format version, epoch, model name and options,
            optimizer class, param groups and scalar state, scheduler state, RNG states, history.
Nothing is ever unpickled. A save writes a temporary file in the same folder, fsyncs it and renames
it over the target, so a crash mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile

from ..backends import backend_name_of, to_numpy

FORMAT = "xpnet-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not fit the model it is loaded into."""


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


def atomic_write_bytes(path: str, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that readers see the old file or the new one, never half."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save_checkpoint(path, model, optimizer=None, scheduler=None, epoch=0, extra=None) -> str:
    """Save model, optimizer, scheduler, RNG states and ``extra`` (JSON-able) to ``path``."""
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


def read_checkpoint(path):
    """(header dict, {name: NumPy array}) of a checkpoint file; CheckpointError on any problem."""
    from safetensors.numpy import load

    path = str(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    with open(path, "rb") as handle:
        payload = handle.read()
    try:
        tensors = load(payload)
        size = int.from_bytes(payload[:8], "little")
        raw_header = json.loads(payload[8:8 + size])
        header = json.loads(raw_header.get("__metadata__", {}).get("xpnet", "null"))
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path!r} is corrupt or not a safetensors file "
                              f"({len(payload)} bytes): {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is a safetensors file but not an xpnet checkpoint (no xpnet header)")
    return header, tensors


def load_checkpoint(path, model, optimizer=None, scheduler=None, restore_rng=True) -> dict:
    """Load a checkpoint into ``model`` (and optimizer, scheduler). Returns the JSON header.

    Everything is validated before anything changes: a checkpoint of another model raises
    CheckpointError naming the keys, and leaves model, optimizer and scheduler as they were.
    """
    from ..backends import get_backend

    header, tensors = read_checkpoint(path)
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(model_sd))
    unexpected = sorted(set(model_sd) - set(expected))
    wrong = [(k, tuple(model_sd[k].shape), tuple(expected[k].shape)) for k in expected
             if k in model_sd and tuple(model_sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        for k, got, want in wrong[:8]:
            parts.append(f"{k}: checkpoint {got} vs model {want}")
        raise CheckpointError(f"checkpoint {str(path)!r} (model {header['model']['name']!r}) does not fit "
                              f"this model: " + "; ".join(parts) + ". The model was left unchanged.")
    opt_sd = None
    if optimizer is not None and "optimizer" in header:
        info = header["optimizer"]
        state = {}
        for index in info["indices"]:
            entry = dict(info["scalars"].get(str(index), {}))
            prefix = f"optimizer.{index}."
            for name, value in tensors.items():
                if name.startswith(prefix):
                    entry[name[len(prefix):]] = value
            state[index] = entry
        opt_sd = {"state": state, "param_groups": info["param_groups"]}
    # optimizer first: its load validates and raises without changing anything
    if opt_sd is not None:
        backup = optimizer.state_dict()
        optimizer.load_state_dict(opt_sd)
    try:
        model.load_state_dict(model_sd)
    except Exception:
        if opt_sd is not None:
            optimizer.load_state_dict(backup)
        raise
    if scheduler is not None and "scheduler" in header:
        scheduler.load_state_dict(header["scheduler"]["state"])
    if restore_rng and "rng" in header:
        try:
            get_backend().rng.set_state(header["rng"])
        except (TypeError, ValueError, KeyError):
            pass  # a checkpoint from another backend's generator: weights load, the stream restarts
    return header
