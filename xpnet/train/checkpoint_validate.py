"""Checks behind xpnet checkpoints: every file is hostile until proven otherwise.

The safetensors layout (header length, tensor entries, offsets, file size) is checked by
``xpnet.safetensors_file``; ``check_header`` checks the xpnet JSON document against those entries
before anything is built from it; ``check_model_state``, ``check_optimizer_state`` and
``check_scheduler_state`` check the tensors and states against the objects they are loaded into
before anything changes; ``nonfinite_report`` finds the first NaN/inf in a live model and optimizer.
Every failure is a CheckpointError whose one-line message names the file and the field.

Host-side module: it imports NumPy to check the host arrays read from the file (a checkpoint is
read on the host before anything is moved to a device); checks of live model and optimizer arrays
take the namespace from the array (``backend_of(array).xp``), so they run on every backend.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..backends import backend_name_of, backend_of, dtype_name, unwrap
from ..safetensors_file import SafetensorsFileError, is_int, json_type, numel, show

MAX_OPTION_INT = 65536                # an integer model option (num_classes, in_channels, ...), at most
SMALL_OPTION_INT = 256                # larger integer options must be a dimension of a tensor in the file
INPUT_VOLUME_FLOOR = 3 * 64 * 64      # in_channels * input_size**2 beyond this must fit the largest tensor
MAX_EPOCH = 10**9
MAX_NESTING = 32                      # depth of lists/dicts in header values
INF_ALLOWED = ("best", "mode_worse")  # scheduler fields that legitimately hold +-inf (ReduceLROnPlateau)
FORMAT = "xpnet-checkpoint"
VERSION = 1


class CheckpointError(SafetensorsFileError):
    """A checkpoint file is missing, corrupt, or does not fit the model it is loaded into."""


def fail(path, message: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {str(path)!r}: " + " ".join(str(message).split()))


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --------------------------------------------------------------------------------- xpnet header
def _shapes(tensors_meta) -> dict:
    out = {}
    for name, meta in tensors_meta.items():
        out[name] = tuple(meta["shape"]) if isinstance(meta, dict) else tuple(meta.shape)
    return out


def _walk(path, value, field, depth=0, nan_ok=False, inf_ok=False):
    """Plain JSON values only, nested at most MAX_NESTING deep; numbers finite unless allowed."""
    if depth > MAX_NESTING:
        raise fail(path, f"header field {field!r} is nested more than {MAX_NESTING} deep")
    if isinstance(value, dict):
        for key, item in value.items():
            _walk(path, item, f"{field}.{key}", depth + 1, nan_ok, inf_ok or key in INF_ALLOWED)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(path, item, f"{field}[{index}]", depth + 1, nan_ok, inf_ok)
    elif isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value) and not nan_ok or math.isinf(value) and not inf_ok:
            raise fail(path, f"header field {field!r} is {value}, expected a finite number")
    elif not (value is None or isinstance(value, (str, int, float))):
        raise fail(path, f"header field {field!r} is {json_type(value)}")


def _want(path, container, key, kind, field, optional=False):
    if key not in container:
        if optional:
            return None
        raise fail(path, f"header field {field!r} is missing")
    value = container[key]
    ok = {"dict": isinstance(value, dict), "list": isinstance(value, list), "str": isinstance(value, str),
          "int": is_int(value)}[kind]
    if not ok:
        article = {"dict": "an object", "list": "a list", "str": "a string", "int": "an int"}[kind]
        raise fail(path, f"header field {field!r} is {json_type(value)} ({show(value, 40)}), expected {article}")
    return value


def _check_options(path, options, shapes):
    model_shapes = [s for name, s in shapes.items() if name.startswith("model.") and numel(s) > 0]
    dims = {d for s in model_shapes for d in s}
    largest = max((numel(s) for s in model_shapes), default=0)
    for key, value in options.items():
        field = f"model.options.{key}"
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) > 64:
            raise fail(path, f"header field {field!r} has {len(value)} entries, at most 64 expected")
        for item in items:
            if item is None or isinstance(item, bool) or isinstance(item, str) and len(item) <= 256:
                continue
            if isinstance(item, float):
                if not math.isfinite(item):
                    raise fail(path, f"header field {field!r} is {item}, expected a finite number")
                continue
            if not is_int(item):
                raise fail(path, f"header field {field!r} is {json_type(item)}; model options are numbers, "
                                 "bools, short strings or lists of those")
            if not 1 <= item <= MAX_OPTION_INT:
                raise fail(path, f"header field {field!r} is {item}; a size option must be a positive int "
                                 f"of at most {MAX_OPTION_INT}")
            if key not in ("num_classes", "input_size") and item > SMALL_OPTION_INT and item not in dims:
                raise fail(path, f"header field {field!r} is {item}, but no model tensor in the file has a "
                                 "dimension of that size")
    classes = options.get("num_classes")
    if is_int(classes) and not any(s and s[0] == classes for s in model_shapes):
        raise fail(path, f"header field 'model.options.num_classes' is {classes}, but no model tensor in the "
                         f"file has {classes} rows (the classifier's weight and bias would)")
    channels, side = options.get("in_channels"), options.get("input_size")
    if is_int(channels) and is_int(side) and channels * side * side > max(INPUT_VOLUME_FLOOR, largest):
        raise fail(path, f"header fields 'model.options.in_channels' = {channels} and 'model.options.input_size'"
                         f" = {side} describe inputs of {channels * side * side} values, more than {INPUT_VOLUME_FLOOR} "
                         f"and more than the largest model tensor in the file ({largest} values)")


def _check_optimizer_header(path, info, shapes):
    _want(path, info, "class", "str", "optimizer.class")
    groups = _want(path, info, "param_groups", "list", "optimizer.param_groups")
    scalars = _want(path, info, "scalars", "dict", "optimizer.scalars")
    indices = _want(path, info, "indices", "list", "optimizer.indices")
    if not groups:
        raise fail(path, "header field 'optimizer.param_groups' is empty")
    listed = []
    for gi, group in enumerate(groups):
        field = f"optimizer.param_groups[{gi}]"
        if not isinstance(group, dict):
            raise fail(path, f"header field {field!r} is {json_type(group)}, expected an object")
        params = _want(path, group, "params", "list", f"{field}.params")
        if not all(is_int(i) and i >= 0 for i in params):
            raise fail(path, f"header field '{field}.params' must list non-negative ints")
        listed += params
        for key, value in group.items():
            if key == "params":
                continue
            values = value if isinstance(value, list) else [value]
            for item in values:
                if not (item is None or isinstance(item, (bool, str)) or _is_number(item)):
                    raise fail(path, f"header field '{field}.{key}' is {json_type(item)}")
                if _is_number(item) and not math.isfinite(item):
                    raise fail(path, f"header field '{field}.{key}' is {item}, expected a finite number")
        if "lr" in group and not (_is_number(group["lr"]) and group["lr"] >= 0):
            raise fail(path, f"header field '{field}.lr' is {show(group['lr'], 40)}, expected a number >= 0")
    if len(set(listed)) != len(listed) or sorted(listed) != list(range(len(listed))):
        raise fail(path, "header field 'optimizer.param_groups[*].params' must number the parameters 0, 1, 2, ... "
                         "once each")
    if not all(is_int(i) and 0 <= i < len(listed) for i in indices) or len(set(indices)) != len(indices):
        raise fail(path, f"header field 'optimizer.indices' must list distinct parameter numbers below {len(listed)}")
    for key, entry in scalars.items():
        field = f"optimizer.scalars.{key}"
        if not key.isdigit() or int(key) not in indices or not isinstance(entry, dict):
            raise fail(path, f"header field {field!r} must be an object for a parameter in 'optimizer.indices'")
        _walk(path, entry, field)
        if "step" in entry and not (is_int(entry["step"]) and entry["step"] >= 0):
            raise fail(path, f"header field '{field}.step' is {show(entry['step'], 40)}, expected an int >= 0")
    for name in shapes:
        if name.startswith("optimizer."):
            index, _, key = name[len("optimizer."):].partition(".")
            if not index.isdigit() or int(index) not in indices or not key:
                raise fail(path, f"tensor {show(name)} is not 'optimizer.<index>.<name>' for a parameter in "
                                 "'optimizer.indices'")


def check_header(header, tensors_meta, path) -> dict:
    """Check an xpnet header against the file's tensor entries (``{name: {'dtype', 'shape'}}`` or
    arrays) before anything is built from it; returns the header or raises CheckpointError."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is a safetensors file but not an xpnet checkpoint (no xpnet header)")
    version = header.get("version")
    if not is_int(version) or not 1 <= version <= VERSION:
        raise fail(path, f"header field 'version' is {show(version, 40)}; this xpnet reads versions 1 to {VERSION}")
    epoch = header.get("epoch")
    if not is_int(epoch) or not 0 <= epoch <= MAX_EPOCH:
        raise fail(path, f"header field 'epoch' is {show(epoch, 40)}, expected an int from 0 to {MAX_EPOCH}")
    model = _want(path, header, "model", "dict", "model")
    name = _want(path, model, "name", "str", "model.name")
    if not name or len(name) > 200:
        raise fail(path, f"header field 'model.name' is {show(name)}, expected 1 to 200 characters")
    options = _want(path, model, "options", "dict", "model.options")
    shapes = _shapes(tensors_meta)
    for tensor in shapes:
        if not (tensor.startswith("model.") and len(tensor) > 6 or tensor.startswith("optimizer.")):
            raise fail(path, f"tensor {show(tensor)} is neither 'model.<key>' nor 'optimizer.<index>.<name>'")
    _check_options(path, options, shapes)
    _want(path, header, "backend", "str", "backend", optional=True)
    rng = _want(path, header, "rng", "dict", "rng", optional=True)
    if rng is not None:
        _walk(path, rng, "rng")
    optimizer = _want(path, header, "optimizer", "dict", "optimizer", optional=True)
    if optimizer is not None:
        _check_optimizer_header(path, optimizer, shapes)
    elif any(t.startswith("optimizer.") for t in shapes):
        raise fail(path, "the file holds optimizer tensors but header field 'optimizer' is missing")
    scheduler = _want(path, header, "scheduler", "dict", "scheduler", optional=True)
    if scheduler is not None:
        _want(path, scheduler, "class", "str", "scheduler.class")
        _walk(path, _want(path, scheduler, "state", "dict", "scheduler.state"), "scheduler.state")
    extra = _want(path, header, "extra", "dict", "extra", optional=True)
    if extra is not None:
        _walk(path, extra, "extra", nan_ok=True, inf_ok=True)
        history = _want(path, extra, "history", "dict", "extra.history", optional=True)
        for key, values in (history or {}).items():
            field = f"extra.history.{key}"
            if not isinstance(values, list) or not all(v is None or _is_number(v) for v in values):
                raise fail(path, f"header field {field!r} must be a list of numbers or nulls")
        if history and len({len(v) for v in history.values()}) > 1:
            raise fail(path, "header fields 'extra.history.*' must be lists of one length (one entry per epoch)")
        loader = _want(path, extra, "loader", "dict", "extra.loader", optional=True)
        for key in ("epoch", "seed"):
            if loader is not None and key in loader and not (is_int(loader[key]) and loader[key] >= 0):
                raise fail(path, f"header field 'extra.loader.{key}' is {show(loader[key], 40)}, expected an int >= 0")
    return header


# --------------------------------------------------------------------------------- live objects
def _kind(name: str) -> str:
    name = str(name)
    if name == "bool":
        return "bool"
    if "float" in name:
        return "floating"
    if name.startswith(("int", "uint")):
        return "integer"
    return name


def _np_kind(array) -> str:
    return {"b": "bool", "f": "floating", "i": "integer", "u": "integer"}.get(array.dtype.kind, array.dtype.name)


def _bad_count(array) -> int:
    if array.dtype.kind != "f" or array.size == 0:
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def check_model_state(path, header, model, model_sd) -> None:
    """Keys, shapes, dtype kinds and finiteness of the file's model tensors against ``model``."""
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
            parts.append(f"unexpected keys {[k[:80] for k in unexpected[:8]]}{' ...' if len(unexpected) > 8 else ''}")
        for k, got, want in wrong[:8]:
            parts.append(f"{k}: checkpoint {got} vs model {want}")
        raise fail(path, f"(model {show(header['model']['name'])}) does not fit this model: " + "; ".join(parts)
                   + ". The model was left unchanged.")
    for key, current in expected.items():
        array, want = model_sd[key], dtype_name(unwrap(current).dtype)
        if _np_kind(array) != _kind(want):
            raise fail(path, f"model tensor {key!r} has dtype {array.dtype.name} but the model's entry is {want} "
                             f"({_kind(want)} values cannot be loaded from {_np_kind(array)} ones)")
        if _kind(want) == "integer" and array.size and array.dtype.name != want:
            info = np.iinfo(want)
            if int(array.min()) < info.min or int(array.max()) > info.max:
                raise fail(path, f"model tensor {key!r} holds values outside the range of the model's {want}")
        bad = _bad_count(array)
        if bad:
            raise fail(path, f"model tensor {key!r} holds {bad} NaN/inf values")


def optimizer_state_from(info, tensors) -> dict:
    """The optimizer state dict a checked header and its tensors describe."""
    state = {}
    for index in info["indices"]:
        entry = dict(info["scalars"].get(str(index), {}))
        prefix = f"optimizer.{index}."
        for name, value in tensors.items():
            if name.startswith(prefix):
                entry[name[len(prefix):]] = value
        state[index] = entry
    return {"state": state, "param_groups": info["param_groups"]}


def _same_kind(saved, current) -> bool:
    """Same category of value (numbers of either kind, bools, strings, lists of one length, objects)."""
    if saved is None or current is None:
        return True
    if isinstance(current, bool) or isinstance(saved, bool):
        return isinstance(current, bool) and isinstance(saved, bool)
    if isinstance(current, numbers.Real):
        return _is_number(saved)
    if isinstance(current, (list, tuple)):
        return isinstance(saved, list) and len(saved) == len(current) and all(map(_same_kind, saved, current))
    if isinstance(current, dict):
        if not isinstance(saved, dict):
            return False
        if current and all(is_int(k) for k in current):  # e.g. MultiStepLR's milestones Counter: JSON keys are str
            return all(_int_text(k) for k in saved) and all(
                _same_kind(v, next(iter(current.values()))) for v in saved.values())
        return True
    return isinstance(saved, type(current))


def _int_text(key) -> bool:
    return isinstance(key, str) and key.lstrip("-").isdigit() and len(key) < 20


def restore_keys(saved, current):
    """``saved`` (JSON) with the int keys of ``current``'s dicts back (JSON turned them into str)."""
    if isinstance(current, dict) and isinstance(saved, dict):
        if current and all(is_int(k) for k in current):
            out = {int(k): v for k, v in saved.items()}
            return out if type(current) is dict else type(current)(out)
        return {k: restore_keys(v, current[k]) if k in current else v for k, v in saved.items()}
    if isinstance(current, (list, tuple)) and isinstance(saved, list) and len(saved) == len(current):
        return [restore_keys(a, b) for a, b in zip(saved, current)]
    return saved


def check_optimizer_state(path, optimizer, info, opt_sd) -> None:
    """The saved optimizer state against ``optimizer``: class, groups, option types, state shapes."""
    cls = type(optimizer).__name__
    if info["class"] != cls:
        raise fail(path, f"header field 'optimizer.class' is {show(info['class'])} but the optimizer is a {cls}")
    groups, saved_groups = optimizer.param_groups, opt_sd["param_groups"]
    if len(saved_groups) != len(groups):
        raise fail(path, f"header field 'optimizer.param_groups' has {len(saved_groups)} groups, the optimizer "
                         f"has {len(groups)}")
    where = {}
    for gi, (group, saved) in enumerate(zip(groups, saved_groups)):
        field = f"optimizer.param_groups[{gi}]"
        if len(saved["params"]) != len(group["params"]):
            raise fail(path, f"header field '{field}.params' lists {len(saved['params'])} parameters, the "
                             f"optimizer's group {gi} has {len(group['params'])}")
        for key, value in saved.items():
            if key != "params" and key in group and not _same_kind(value, group[key]):
                raise fail(path, f"header field '{field}.{key}' is {show(value, 40)}, but the optimizer's value is "
                                 f"{show(group[key], 40)}")
        merged = {**optimizer.defaults, **group, **{k: v for k, v in saved.items() if k != "params"}}
        check = getattr(optimizer, "_check_group", None)
        try:
            if check is not None:
                check(merged, gi)
        except (TypeError, ValueError, KeyError) as exc:
            raise fail(path, f"header field {field!r} is not valid for {cls}: {exc}") from None
        for index, p in zip(saved["params"], group["params"]):
            where[index] = (p, gi, merged)
    for index, entry in opt_sd["state"].items():
        p, gi, group = where[index]
        shape, want = tuple(unwrap(p.data).shape), dtype_name(unwrap(p.data).dtype)
        try:
            known = set(optimizer.init_state(unwrap(p.data), group)) | {"step"}
        except Exception:  # noqa: BLE001 -- an optimizer without a usable init_state: no key check
            known = None
        for key, value in entry.items():
            name = f"optimizer.{index}.{key}"
            if known is not None and len(known) > 1 and key not in known:
                raise fail(path, f"optimizer state {key!r} of parameter {index} is not a {cls} state "
                                 f"(expected {sorted(known)})")
            if isinstance(value, np.ndarray):
                if tuple(value.shape) != shape:
                    raise fail(path, f"optimizer tensor {name!r} has shape {tuple(value.shape)}, the parameter "
                                     f"has {shape}")
                if _kind(want) == "floating" and _np_kind(value) != "floating":
                    raise fail(path, f"optimizer tensor {name!r} has dtype {value.dtype.name} but the parameter "
                                     f"is {want}")
                bad = _bad_count(value)
                if bad:
                    raise fail(path, f"optimizer tensor {name!r} holds {bad} NaN/inf values")
        if known is not None and len(known) > 1:
            absent = sorted(k for k in known - {"step"} if k not in entry)
            if absent:
                raise fail(path, f"optimizer state of parameter {index} lacks {absent} (needed by {cls})")


def check_scheduler_state(path, scheduler, info) -> None:
    """The saved scheduler state against ``scheduler``: class, known fields, field types."""
    cls = type(scheduler).__name__
    if info["class"] != cls:
        raise fail(path, f"header field 'scheduler.class' is {show(info['class'])} but the scheduler is a {cls}")

    def compare(saved, target, field):
        current = target.state_dict()
        for key, value in saved.items():
            if key not in current:
                raise fail(path, f"header field '{field}.{key}' is not a field of {type(target).__name__}")
            if key == "_schedulers" and isinstance(value, list):
                inner = getattr(target, "_schedulers", [])
                if len(value) != len(inner) or not all(isinstance(v, dict) for v in value):
                    raise fail(path, f"header field '{field}._schedulers' must hold {len(inner)} scheduler states")
                for i, (sub, obj) in enumerate(zip(value, inner)):
                    compare(sub, obj, f"{field}._schedulers[{i}]")
            elif not _same_kind(value, current[key]):
                raise fail(path, f"header field '{field}.{key}' is {show(value, 40)}, but {type(target).__name__}'s "
                                 f"value is {show(current[key], 40)}")

    compare(info["state"], scheduler, "scheduler.state")


def _first_bad(array):
    """Number of NaN/inf values in a floating array of any backend (0 when none or not floating)."""
    array = unwrap(array)
    if backend_name_of(array) is None or _kind(dtype_name(array.dtype)) != "floating":
        return 0
    xp = backend_of(array).xp
    finite = xp.isfinite(array)
    if bool(xp.all(finite)):
        return 0
    return int(xp.sum(xp.astype(xp.logical_not(finite), xp.int64)))


def nonfinite_report(model, optimizer=None):
    """None when every parameter, buffer, optimizer state array and param-group number is finite;
    otherwise a one-line description of the first offender, e.g.
    "parameter '1.weight' holds 3 NaN/inf values"."""
    names = {}
    for name, p in model.named_parameters():
        names[id(p)] = name
        bad = _first_bad(p.data)
        if bad:
            return f"parameter {name!r} holds {bad} NaN/inf values"
    for name, b in model.named_buffers():
        bad = _first_bad(b)
        if bad:
            return f"buffer {name!r} holds {bad} NaN/inf values"
    if optimizer is None:
        return None
    for gi, group in enumerate(optimizer.param_groups):
        for key, value in group.items():
            if key == "params":
                continue
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if _is_number(item) and not math.isfinite(item):
                    return f"optimizer param_groups[{gi}][{key!r}] is {item}"
        for pi, p in enumerate(group["params"]):
            for key, value in optimizer.state.get(p, {}).items():
                bad = _first_bad(value)
                if bad:
                    who = names.get(id(p), f"{pi} of group {gi}")
                    return f"optimizer state {key!r} of parameter {who!r} holds {bad} NaN/inf values"
    return None
