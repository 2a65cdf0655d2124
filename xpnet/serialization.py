"""``xpnet.save(obj, path)`` and ``xpnet.load(path, map_location=None)``: torch.save/torch.load
without pickle.

What can be saved: nested dicts (keys str or int), lists and tuples of Tensors (Parameters too),
raw backend arrays, NumPy arrays and scalars, bool, int, float (nan and inf included), str and
None: a model's or an optimizer's ``state_dict()``, or a checkpoint dict holding both.

File format: one safetensors file.
  tensors   every array once, named after where it sits (``features.0.weight``,
            ``state.0.exp_avg``; ``#2`` appended when two places give one name), so a model's state
            dict saved here is a plain safetensors state dict to any other reader;
  metadata  ``xpnet.save`` -> JSON ``{"format": "xpnet-save", "version": 1, "root": NODE}``, where
            NODE is null, true/false, a JSON number or string, or one tagged object:
            ``{"list": [NODE...]}``, ``{"tuple": [NODE...]}``, ``{"dict": [[KEY, NODE]...]}`` (KEY a
            string or an int), ``{"float": "nan" | "inf" | "-inf"}``,
            ``{"tensor": NAME, "requires_grad"?: bool, "parameter"?: bool, "location"?: str}``,
            ``{"array": NAME, "location"?: str}`` (a raw array of a backend),
            ``{"numpy": NAME, "scalar"?: bool}`` (a NumPy array, or with ``scalar`` a NumPy scalar).
An array (or Tensor) that appears twice is stored once and comes back as one object in both places.
A safetensors file without this metadata loads as ``{name: Tensor}``.

Writing goes through ``xpnet.safe_io.atomic_write_bytes`` (a temporary file in the same folder,
fsync, ``os.replace``): a failed save leaves the previous file as it was. Reading treats the file as
hostile: a regular file only, the 8-byte header length bounded, the safetensors header (dtypes,
shapes, offsets inside the file, the file's size) and the JSON structure checked before the body
is read, then exactly the body is read. PyTorch's ``.pt``/``.pth`` files (zip or legacy pickle,
recognised by their first bytes, never by the extension) go through
``torch.load(path, map_location="cpu", weights_only=True)`` when torch is installed; nothing here
ever unpickles. Errors are ``SerializationError`` (a ValueError) naming the file and the problem;
loading has no side effects, so a failed load changes nothing.

Host-side module: it reads and writes NumPy arrays on the host (``to_numpy`` on save, the
backend's ``from_host`` on load); the safetensors checks are those of ``xpnet.safetensors_file``.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np

from .safe_io import ShortRead, atomic_write_bytes, memory_guard, open_regular_fd, read_exactly
from .safetensors_file import MAX_HEADER_BYTES, SafetensorsFileError, array_from_body, loads_json, parse_file_header

__all__ = ["save", "load", "SerializationError", "file_kind", "FORMAT", "VERSION", "METADATA_KEY", "MAX_DEPTH"]

FORMAT = "xpnet-save"
VERSION = 1
METADATA_KEY = "xpnet.save"
MAX_DEPTH = 64  # containers nested deeper than this are refused (on save: a cycle, most likely)
_SAVABLE_DTYPES = frozenset("bool uint8 int8 uint16 int16 uint32 int32 uint64 int64 float16 float32 float64".split())
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # pickled 0x1950a86a20f9469cfc6c


class SerializationError(ValueError):
    """A file that ``xpnet.load`` cannot read (corrupt, hostile, or needing torch), or an object
    that ``xpnet.save`` cannot store; the message names the file (or the place in the object)."""


def _error(path, message) -> SerializationError:
    return SerializationError(f"{path}: " + " ".join(str(message).split()))


# ============================================================================== saving
class _Encoder:
    """Turns an object into the JSON structure, collecting its arrays as host NumPy arrays."""

    def __init__(self):
        self.tensors: dict = {}    # safetensors name -> C-contiguous little-endian NumPy array
        self.names: dict = {}      # id(raw array) -> name, so an array saved twice is stored once
        self.keep: list = []       # the raw arrays named above, alive until the save ends (ids stay unique)

    def encode(self, value, parts: tuple, depth: int):
        from .autodiff.tensor import Tensor
        from .backends import backend_name_of, describe_device

        if depth > MAX_DEPTH:
            raise TypeError(f"xpnet.save: {_where(parts)} is nested more than {MAX_DEPTH} deep (a container that "
                            "holds itself?)")
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            if math.isfinite(value):
                return float(value)
            return {"float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
        if isinstance(value, np.generic):
            return {"numpy": self._store(np.asarray(value), value, parts), "scalar": True}
        if isinstance(value, Tensor):
            node = {"tensor": self._store(value.data, value.data, parts)}
            if value.requires_grad:
                node["requires_grad"] = True
            if _is_parameter(value):
                node["parameter"] = True
            node["location"] = _location(describe_device(value.data))
            return node
        name = backend_name_of(value)
        if name == "numpy":
            return {"numpy": self._store(value, value, parts)}
        if name is not None:
            return {"array": self._store(value, value, parts), "location": _location(describe_device(value))}
        if isinstance(value, dict):
            items = []
            for key, item in value.items():
                if isinstance(key, bool) or not isinstance(key, (str, int)):
                    raise TypeError(f"xpnet.save: {_where(parts)} has a key {key!r} of type {type(key).__name__}; "
                                    "dict keys must be str or int")
                key = key if isinstance(key, str) else int(key)
                items.append([key, self.encode(item, parts + (key,), depth + 1)])
            return {"dict": items}
        if isinstance(value, (list, tuple)):
            tag = "list" if isinstance(value, list) else "tuple"
            return {tag: [self.encode(item, parts + (i,), depth + 1) for i, item in enumerate(value)]}
        raise TypeError(f"xpnet.save: {_where(parts)} is a {type(value).__module__}.{type(value).__qualname__}, "
                        "which cannot be saved; supported: Tensor, raw arrays, NumPy arrays, dict (str or int keys), "
                        "list, tuple, bool, int, float, str, None")

    def _store(self, array, identity, parts):
        from .backends import dtype_name, to_numpy

        known = self.names.get(id(identity))
        if known is not None:
            return known
        host = to_numpy(array)
        if dtype_name(host.dtype) not in _SAVABLE_DTYPES:
            raise TypeError(f"xpnet.save: {_where(parts)} has dtype {host.dtype}, which a safetensors file cannot "
                            f"hold as such; supported: {', '.join(sorted(_SAVABLE_DTYPES))}")
        if host.dtype.byteorder == ">":
            host = host.astype(host.dtype.newbyteorder("<"))
        if not host.flags.c_contiguous:
            host = host.copy(order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
        # named after where it sits: "features.0.weight", "state.0.exp_avg"; "#2" on a clash
        base = ".".join(str(part) for part in parts) or "root"
        name, count = base, 1
        while name in self.tensors or name == "__metadata__":
            count += 1
            name = f"{base}#{count}"
        self.tensors[name] = host
        self.names[id(identity)] = name
        self.keep.append(identity)
        return name


def _where(parts) -> str:
    """The place of a value in the saved object, as Python would index it: root['state'][0]."""
    return "the object" if not parts else "root" + "".join(f"[{part!r}]" for part in parts)


def _is_parameter(tensor) -> bool:
    from .nn.parameter import Parameter

    return isinstance(tensor, Parameter)


def _location(device: str) -> str:
    """PyTorch-style location tag of a backend label: 'cpu', 'cuda:0', 'array_api_strict:device1'."""
    name, _, label = device.partition(":")
    if name == "cupy":
        return f"cuda:{label}"
    if name == "torch":
        return label
    if name == "numpy" or label == "CPU_DEVICE":
        return "cpu"
    return device


def save(obj, f) -> None:
    """Save ``obj`` (nested dicts/lists/tuples of Tensors, arrays, numbers, strings, None) to the
    file ``f`` (a path) as one safetensors file, atomically. Never pickles.

    ``xpnet.save(model.state_dict(), "model.safetensors")``;
    ``xpnet.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, path)``.
    A value that cannot be stored raises TypeError naming where it sits, before anything is written.
    """
    from safetensors.numpy import save as safetensors_bytes

    if not isinstance(f, (str, bytes, os.PathLike)):
        raise TypeError(f"xpnet.save: expected a file path (str or os.PathLike), got {type(f).__name__}; "
                        "file objects are not supported (the write is atomic: a temporary file is renamed)")
    path = os.fsdecode(f)
    encoder = _Encoder()
    root = encoder.encode(obj, (), 0)
    document = json.dumps({"format": FORMAT, "version": VERSION, "root": root}, allow_nan=False,
                          separators=(",", ":"))
    payload = safetensors_bytes(encoder.tensors, metadata={METADATA_KEY: document})
    atomic_write_bytes(path, payload)


# ============================================================================== loading
def file_kind(head: bytes) -> str:
    """What the first 16 bytes of a file say it is: 'torch-zip', 'torch-legacy', 'pickle' or
    'safetensors' (anything else: the safetensors checks then say what is wrong).

    A safetensors header starts with '{' at byte 8; that is tested first, since its 8-byte length
    may itself begin like a pickle (a header of 0x0480 bytes starts b'\\x80\\x04')."""
    if head[8:9] == b"{":
        return "safetensors"
    if head[:4] in _ZIP_MAGIC:
        return "torch-zip"
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch-legacy"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return "safetensors"


_KIND_WORDS = {"torch-zip": "a zip archive (PyTorch's torch.save format)",
               "torch-legacy": "a PyTorch file in the legacy (pickle) format",
               "pickle": "a Python pickle"}


def load(f, map_location=None, *, weights_only=True):
    """Load what ``xpnet.save`` wrote (or a safetensors state dict, or, with torch installed, a
    PyTorch ``.pt``/``.pth`` file). Tensors and raw arrays come back on ``map_location``:

    * None: the current backend and device;
    * ``"cpu"`` (NumPy; under array_api_strict or torch, their CPU), ``"cuda"``, ``"cuda:1"`` (CuPy),
      a backend name (``"numpy"``, ``"array_api_strict:device1"``), a device of the current
      backend (``"device1"``), a Backend, or any object with ``.type`` (and ``.index``), such as a
      device object;
    * a dict mapping saved locations to targets (``{"cuda:1": "cuda:0"}``; others go to the
      current backend);
    * a callable ``fn(array, location)`` given each host NumPy array and its saved location
      (``'cpu'``, ``'cuda:0'``); it returns the array (or Tensor) to use, or None for the default.

    NumPy arrays saved as such come back as NumPy arrays. ``weights_only`` is accepted for
    PyTorch code; xpnet never unpickles, so False is refused.
    """
    if weights_only is False:
        raise ValueError("xpnet.load: weights_only=False is not supported: xpnet never unpickles arbitrary objects "
                         "(PyTorch files are read with torch.load(weights_only=True))")
    if not isinstance(f, (str, bytes, os.PathLike)):
        raise TypeError(f"xpnet.load: expected a file path (str or os.PathLike), got {type(f).__name__}")
    path = os.fsdecode(f)
    place = _placer(map_location)
    fd, size = open_regular_fd(path, "file to load")
    try:
        head = _read_exactly(fd, min(size, 16), path, "the first bytes")
        kind = file_kind(bytes(head))
        if kind != "safetensors":
            os.close(fd)
            fd = None
            return _load_torch(path, kind, place)
        entries, root, body = _read_safetensors(fd, size, bytes(head), path)
    finally:
        if fd is not None:
            os.close(fd)
    return _build(path, entries, root, body, place)


def _read_exactly(fd, count, path, what):
    try:
        return read_exactly(fd, count)
    except ShortRead as short:
        raise _error(path, f"the file ended after {short.done} of the {count} bytes of {what} (truncated while "
                           "being read?)") from None


def _read_safetensors(fd, size, head, path):
    """(entries, root node or None, body bytes) of a safetensors file whose header and structure
    check out (None: a plain safetensors file); the body is read only after every check passed."""
    if size < 8:
        raise _error(path, f"the file is {size} bytes, too short for a safetensors file (8 bytes of header length) "
                           "and not a PyTorch file")
    header_len = int.from_bytes(head[:8], "little")
    if header_len > MAX_HEADER_BYTES:
        raise _error(path, f"not a safetensors file, nor a PyTorch one: its first 8 bytes give a header length of "
                           f"{header_len} bytes, more than the {MAX_HEADER_BYTES} accepted")
    if 8 + header_len > size:
        raise _error(path, f"the safetensors header length field says {header_len} bytes but the file is {size} "
                           "bytes (truncated, or not a safetensors file)")
    if header_len and len(head) > 8 and head[8:9] != b"{":
        raise _error(path, "not a safetensors file, nor a PyTorch one: the header does not start with '{'")
    os.lseek(fd, 8, os.SEEK_SET)
    raw = bytes(_read_exactly(fd, header_len, path, "the header"))
    try:
        entries, metadata, body_size = parse_file_header(raw, path, header_len, size)
        document = None
        if METADATA_KEY in metadata:
            document = loads_json(metadata[METADATA_KEY], path, f"header field '__metadata__.{METADATA_KEY}'")
    except SafetensorsFileError as exc:
        raise _error(path, exc.reason) from None
    root = None if document is None else _check_document(document, entries, path)
    with memory_guard(path, "reading the tensor data"):
        body = _read_exactly(fd, body_size, path, "tensor data")
    return entries, root, body


def _check_document(document, entries, path):
    """The root node of a checked structure; every NAME it uses is a tensor of the file and every
    tensor is used."""
    if not isinstance(document, dict) or document.get("format") != FORMAT or "root" not in document:
        raise _error(path, f"header field '__metadata__.{METADATA_KEY}' is not an {FORMAT} document (expected an "
                           "object with 'format', 'version' and 'root')")
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
        raise _error(path, f"structure version {version!r}; this xpnet reads versions 1 to {VERSION}")
    used: set = set()
    _check_node(document["root"], "root", 0, entries, used, path)
    unused = [name for name in entries if name not in used]
    if unused:
        raise _error(path, f"the file holds {len(unused)} tensor(s) that its structure does not use "
                           f"({', '.join(repr(n[:60]) for n in unused[:4])}{' ...' if len(unused) > 4 else ''})")
    return document["root"]


_TAGS = {
    "list": {"list"}, "tuple": {"tuple"}, "dict": {"dict"}, "float": {"float"},
    "tensor": {"tensor", "requires_grad", "parameter", "location"},
    "array": {"array", "location"},
    "numpy": {"numpy", "scalar"},
}


def _check_node(node, where, depth, entries, used, path):
    if depth > MAX_DEPTH:
        raise _error(path, f"structure at {where} is nested more than {MAX_DEPTH} deep")
    if node is None or isinstance(node, (bool, int, str)):
        return
    if isinstance(node, float):
        if not math.isfinite(node):
            raise _error(path, f"structure at {where} is a bare {node} (non-finite floats are tagged)")
        return
    if not isinstance(node, dict):
        raise _error(path, f"structure at {where} is a JSON {type(node).__name__}, expected null, a bool, number, "
                           "string or a tagged object")
    tags = [tag for tag in _TAGS if tag in node]
    if len(tags) != 1 or not set(node) <= _TAGS[tags[0]]:
        raise _error(path, f"structure at {where} is an object with keys {sorted(node)[:6]}, expected one of the "
                           f"tags {', '.join(_TAGS)} (with its own fields)")
    tag, value = tags[0], node[tags[0]]
    if tag in ("list", "tuple"):
        if not isinstance(value, list):
            raise _error(path, f"structure at {where}: '{tag}' must hold a JSON list")
        for i, item in enumerate(value):
            _check_node(item, f"{where}[{i}]", depth + 1, entries, used, path)
    elif tag == "dict":
        if not isinstance(value, list):
            raise _error(path, f"structure at {where}: 'dict' must hold a list of [key, value] pairs")
        seen = set()
        for pair in value:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], (str, int))
                    and not isinstance(pair[0], bool)):
                raise _error(path, f"structure at {where}: a 'dict' entry is not a [key, value] pair with a string "
                                   "or int key")
            if pair[0] in seen:
                raise _error(path, f"structure at {where}: key {pair[0]!r} appears twice")
            seen.add(pair[0])
            key = pair[0][:40] if isinstance(pair[0], str) else pair[0]
            _check_node(pair[1], f"{where}[{key!r}]", depth + 1, entries, used, path)
    elif tag == "float":
        if value not in ("nan", "inf", "-inf"):
            raise _error(path, f"structure at {where}: 'float' must be 'nan', 'inf' or '-inf', got {str(value)[:40]!r}")
    else:
        if not isinstance(value, str) or value not in entries:
            raise _error(path, f"structure at {where} names tensor {str(value)[:80]!r}, which the file does not "
                               "hold")
        entry = entries[value]
        for flag in ("requires_grad", "parameter", "scalar"):
            if flag in node and not isinstance(node[flag], bool):
                raise _error(path, f"structure at {where}: '{flag}' must be true or false")
        if "location" in node and not (isinstance(node["location"], str) and len(node["location"]) <= 200):
            raise _error(path, f"structure at {where}: 'location' must be a short string")
        if (node.get("requires_grad") or node.get("parameter")) and not entry["dtype"].startswith("F"):
            raise _error(path, f"structure at {where}: tensor {value!r} of dtype {entry['dtype']} cannot require "
                               "gradients (only floating tensors can)")
        if node.get("scalar") and entry["shape"]:
            raise _error(path, f"structure at {where}: a NumPy scalar must have shape [], tensor {value!r} has "
                               f"{entry['shape']}")
        used.add(value)


def _build(path, entries, root, body, place):
    hosts = {}
    for name, entry in entries.items():
        try:
            hosts[name] = array_from_body(body, entry, name, path)
        except SafetensorsFileError as exc:
            raise _error(path, exc.reason) from None
    if root is None:  # a plain safetensors file: {name: Tensor}, in the header's order
        root = {"dict": [[name, {"tensor": name}] for name in entries]}
    return _Decoder(hosts, place, path).decode(root)


class _Decoder:
    def __init__(self, hosts, place, path):
        self.hosts, self.place, self.path = hosts, place, path
        self.arrays: dict = {}   # name -> raw array on its target (shared by every place naming it)
        self.tensors: dict = {}  # name -> Tensor

    def decode(self, node):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if "list" in node:
            return [self.decode(item) for item in node["list"]]
        if "tuple" in node:
            return tuple(self.decode(item) for item in node["tuple"])
        if "dict" in node:
            return {key: self.decode(value) for key, value in node["dict"]}
        if "float" in node:
            return float(node["float"])
        if "numpy" in node:
            host = self.hosts[node["numpy"]]
            return host[()] if node.get("scalar") else host
        name = node.get("tensor", node.get("array"))
        array = self.arrays.get(name)
        if array is None:
            array = self.arrays[name] = _placed(self.place, self.hosts[name], node.get("location", "cpu"), self.path,
                                                f"tensor {name!r}")
        if "array" in node:
            return array
        tensor = self.tensors.get(name)
        if tensor is None:
            tensor = self.tensors[name] = _make_tensor(array, node.get("requires_grad", False),
                                                       node.get("parameter", False))
        return tensor


def _placed(place, host, location, path, what):
    """``place(host, ...)``, with a target that cannot hold the array named in the error."""
    from .backends import BackendUnavailableError

    try:
        return place(host, location, path)
    except BackendUnavailableError:
        raise
    except (TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise _error(path, f"{what} ({host.dtype}, shape {tuple(host.shape)}) cannot be placed where map_location "
                           f"says: {first}") from None


def _make_tensor(array, requires_grad, parameter):
    from .autodiff.tensor import Tensor

    if parameter:
        from .nn.parameter import Parameter

        return Parameter(array, requires_grad=requires_grad)
    return Tensor(array, requires_grad=requires_grad)


# ------------------------------------------------------------------------------ map_location
def _placer(map_location):
    """fn(host NumPy array, saved location, path) -> raw array where ``map_location`` says."""
    from .backends import Backend, get_backend

    if map_location is None:
        return lambda host, location, path: get_backend().from_host(host)
    if isinstance(map_location, dict):
        targets = {str(k): _target_backend(v) for k, v in map_location.items()}

        def by_location(host, location, path):
            return targets.get(location, get_backend()).from_host(host)

        return by_location
    if callable(map_location) and not isinstance(map_location, Backend) and not hasattr(map_location, "type"):
        return _call_placer(map_location)
    target = _target_backend(map_location)
    return lambda host, location, path: target.from_host(host)


def _call_placer(fn):
    from .backends import backend_name_of, get_backend, unwrap

    def call(host, location, path):
        result = fn(host, location)
        if result is None:
            return get_backend().from_host(host)
        array = unwrap(result)
        if backend_name_of(array) is None:
            raise TypeError(f"xpnet.load({path!r}): map_location returned a {type(result).__name__} for a tensor "
                            f"saved on {location!r}; expected an array, a Tensor or None")
        return array

    return call


def _target_backend(spec):
    """The Backend a map_location names (see ``load``): as ``xpnet.device`` and ``get_backend(device=)``
    read it ("cpu" is the current backend's host device, "cuda:N" CuPy's GPU N)."""
    from .backends import Backend, get_backend

    if isinstance(spec, Backend):
        return spec
    if not isinstance(spec, str):
        kind = getattr(spec, "type", None)
        if not isinstance(kind, str):
            raise TypeError(f"xpnet.load: map_location {spec!r} is not a device: expected None, a string such as "
                            "'cpu' or 'cuda:0', a backend, a device object, a dict or a callable")
        index = getattr(spec, "index", None)  # any device object spelled as torch's: its "type:index"
        spec = kind if index is None else f"{kind}:{index}"
    try:
        return get_backend(device=spec)
    except (ValueError, TypeError):
        raise ValueError(f"xpnet.load: map_location {spec!r} names no backend or device: expected 'cpu', "
                         f"'cuda', 'cuda:N', a backend name, or a device of the current backend "
                         f"({get_backend()})") from None


# ------------------------------------------------------------------------------ PyTorch files
def _no_torch_message(path, kind):
    return (f"{path}: is {_KIND_WORDS[kind]}; xpnet reads PyTorch files only through "
            "torch.load(weights_only=True), and torch is not installed. Install it (pip install torch) and load "
            f"again, or convert the file once where torch is installed: xpnet convert-weights {path} "
            f"{os.path.splitext(path)[0]}.safetensors, then load the .safetensors file")


def _load_torch(path, kind, place):
    try:
        import torch
    except ImportError:
        raise SerializationError(_no_torch_message(path, kind)) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- whatever torch's reader refuses
        raise _error(path, f"is {_KIND_WORDS[kind]}, and torch.load(weights_only=True) refused it "
                           f"({type(exc).__name__}: {_torch_reason(exc)}). xpnet never unpickles arbitrary objects: "
                           "load the file in PyTorch and save what it holds as tensors and containers (a "
                           "state_dict)") from None
    return _from_torch(obj, torch, place, path, {}, "root", 0)


def _torch_reason(exc) -> str:
    """The reason in torch.load's error, without its advice to retry with weights_only=False."""
    paragraphs = [p.strip() for p in str(exc).split("\n\n") if p.strip()] or [type(exc).__name__]
    if paragraphs[0].startswith("Weights only load failed") and len(paragraphs) > 1:
        paragraphs = [p for p in paragraphs[1:] if not p.startswith("Check the documentation")] or paragraphs
    return " ".join(paragraphs[0].split())[:300]


def _from_torch(value, torch, place, path, memo, where, depth):
    if depth > MAX_DEPTH:
        raise _error(path, f"the object at {where} is nested more than {MAX_DEPTH} deep")
    if isinstance(value, torch.Tensor):
        known = memo.get(id(value))
        if known is not None:
            return known[1]
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            warnings.warn(f"{path}: {where} is bfloat16, which NumPy lacks: loaded as float32", stacklevel=4)
            tensor = tensor.float()
        try:
            host = tensor.contiguous().numpy()
        except (TypeError, RuntimeError) as exc:
            raise _error(path, f"tensor at {where} ({tensor.dtype}, {tensor.layout}) cannot be converted: {exc}") \
                from None
        out = _make_tensor(_placed(place, host, "cpu", path, f"the tensor at {where}"),
                           value.requires_grad and tensor.is_floating_point(),
                           isinstance(value, torch.nn.Parameter))
        memo[id(value)] = (value, out)
        return out
    if isinstance(value, dict):
        return {k: _from_torch(v, torch, place, path, memo, f"{where}[{k!r}]", depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_torch(v, torch, place, path, memo, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(_from_torch(v, torch, place, path, memo, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))
    return value
