"""Pretrained weights: ``models.create(name, ..., weights=PATH)`` and ``xpnet convert-weights``.

``load_weights(model, path)`` reads a file with ``xpnet.load`` (an ``xpnet.save`` file, a plain
safetensors state dict, an xpnet training checkpoint, or, with torch installed, a PyTorch or
torchvision ``.pth``), finds the state dict in it (the object itself, or under ``state_dict`` /
``model_state_dict`` / ``model``, or the ``model.`` tensors of a checkpoint; a ``module.`` prefix
that DistributedDataParallel adds is dropped), checks every key and shape against the model, and
only then loads. A misfit raises ``StateDictError`` listing the first missing, unexpected and
mismatched keys; the model is left as it was.

``xpnet convert-weights IN.pth OUT.safetensors`` turns a PyTorch file into one that loads
without torch (it needs torch itself, once).
"""

from __future__ import annotations

import os

from ..backends import backend_name_of, unwrap
from ..nn.module import StateDictError
from ..safe_io import open_regular
from ..serialization import file_kind, load, save

__all__ = ["load_weights", "state_dict_from", "convert_weights", "register_cli"]

SHOWN = 5  # keys listed per kind of misfit
_WRAPPERS = ("state_dict", "model_state_dict", "model")


def _is_array_like(value) -> bool:
    return backend_name_of(unwrap(value)) is not None


def _shape(value):
    return tuple(unwrap(value).shape)


def state_dict_from(obj, path, expected_keys=None) -> dict:
    """The ``{key: array}`` state dict that a loaded file holds (see the module docstring). Of the
    readings with and without a ``model.`` / ``module.`` prefix, the one sharing most keys with
    ``expected_keys`` wins (the file as it is when none is closer)."""
    if not isinstance(obj, dict):
        raise StateDictError(f"{path}: holds a {type(obj).__name__}, not a state dict (a dict of tensors)")
    if not all(_is_array_like(v) for v in obj.values()):
        for key in _WRAPPERS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(_is_array_like(v) for v in inner.values()):
                obj = inner
                break
        else:
            bad = [k for k, v in obj.items() if not _is_array_like(v)][:SHOWN]
            raise StateDictError(f"{path}: is not a state dict: entries {bad} are not tensors, and no "
                                 f"{' / '.join(repr(w) for w in _WRAPPERS)} entry holds one")
    readings = [dict(obj)]
    keys = [str(k) for k in obj]
    if any(k.startswith("model.") for k in keys) and all(k.startswith(("model.", "optimizer.")) for k in keys):
        # an xpnet training checkpoint: model.<key> and optimizer.<index>.<name> tensors
        readings.append({k[len("model."):]: v for k, v in obj.items() if k.startswith("model.")})
    for reading in list(readings):
        if reading and all(str(k).startswith("module.") for k in reading):  # saved from DistributedDataParallel
            readings.append({k[len("module."):]: v for k, v in reading.items()})
    if expected_keys is None:
        return readings[-1]
    expected = set(expected_keys)
    return max(readings, key=lambda reading: len(expected.intersection(reading)))  # ties: the earliest


def _listed(keys):
    shown = ", ".join(repr(k) for k in keys[:SHOWN])
    return f"[{shown}{', ...' if len(keys) > SHOWN else ''}]"


def check_fits(model, state, path) -> None:
    """StateDictError naming the first missing, unexpected and mismatched keys, if ``state`` does
    not fit ``model`` exactly."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and _shape(state[k]) != _shape(expected[k])]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) {_listed(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) {_listed(unexpected)}")
    if mismatched:
        shown = "; ".join(f"{k!r}: file {_shape(state[k])} vs model {_shape(expected[k])}" for k in mismatched[:SHOWN])
        parts.append(f"{len(mismatched)} shape mismatch(es) ({shown}{'; ...' if len(mismatched) > SHOWN else ''})")
    name = getattr(model, "model_name", type(model).__name__)
    options = getattr(model, "model_options", None)
    built = f" built with {', '.join(f'{k}={v!r}' for k, v in options.items())}" if options else ""
    hint = ""
    head = state.get("classifier.6.weight")  # the last layer of torchvision's VGG and AlexNet heads
    if head is not None and "classifier.6.weight" in mismatched + unexpected and len(_shape(head)) == 2:
        hint = (f" (the file has torchvision's ImageNet head: create the model with num_classes={_shape(head)[0]}, "
                "input_size=224)")
    raise StateDictError(f"{path}: the weights do not fit model {name!r}{built}: " + "; ".join(parts)
                         + f"{hint}. Nothing was loaded.")


def load_weights(model, path):
    """Load the state dict in the file ``path`` into ``model`` after checking every key and shape;
    returns the model. Values take the model's backend, device and dtype."""
    path = os.fspath(path)
    state = state_dict_from(load(path, map_location="numpy"), path, model.state_dict().keys())
    check_fits(model, state, path)
    model.load_state_dict(state)
    return model


# ------------------------------------------------------------------------------ convert-weights
def convert_weights(source, target, overwrite=False) -> dict:
    """Write the PyTorch file ``source`` as the safetensors file ``target`` (``xpnet.save``);
    returns ``{'tensors': n, 'values': total elements}``. Needs torch."""
    source, target = os.fsdecode(source), os.fsdecode(target)
    with open_regular(source, "PyTorch file to convert") as (handle, _):
        kind = file_kind(handle.read(16))
    if kind == "safetensors":
        raise ValueError(f"{source}: not a PyTorch file (neither a zip archive nor a pickle); a .safetensors file "
                         "needs no conversion: load it with xpnet.load or models.create(..., weights=PATH)")
    if os.path.lexists(target) and not overwrite:
        raise ValueError(f"{target}: exists; give another output path or --overwrite to replace it")
    obj = load(source, map_location="numpy")
    counted: dict = {}

    def count(value):
        if isinstance(value, dict):
            for item in value.values():
                count(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                count(item)
        elif _is_array_like(value):
            counted[id(unwrap(value))] = _shape(value)

    count(obj)
    save(obj, target)
    values = 0
    for shape in counted.values():
        size = 1
        for d in shape:
            size *= d
        values += size
    return {"tensors": len(counted), "values": values}


def _cmd_convert(args) -> int:
    summary = convert_weights(args.source, args.target, overwrite=args.overwrite)
    print(f"wrote {args.target}: {summary['tensors']} tensors, {summary['values']:,} values, from {args.source}")
    return 0


def register_cli(sub):
    p = sub.add_parser("convert-weights", help="convert a PyTorch .pt/.pth file to safetensors (needs torch)",
                       description="Read IN with torch.load(weights_only=True) and write its tensors and "
                                   "structure as OUT with xpnet.save; OUT then loads without torch "
                                   "(xpnet.load, models.create(..., weights=OUT)).")
    p.add_argument("source", metavar="IN.pth", help="a PyTorch file (zip or legacy format)")
    p.add_argument("target", metavar="OUT.safetensors", help="the safetensors file to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_cmd_convert)
