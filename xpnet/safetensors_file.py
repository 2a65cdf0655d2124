"""The safetensors file format read as hostile input: the header's layout checked, arrays built.

A safetensors file is 8 bytes of little-endian header length N, N bytes of JSON header, then the
body. ``parse_file_header`` checks the header (at most ``MAX_HEADER_BYTES``: every tensor entry's
dtype, shape and offsets; the tensors contiguous, covering the body; the file's size) before the
body is read; ``array_from_body`` then builds one checked entry's array from the body's bytes.
``loads_json`` parses JSON with duplicate keys refused. ``xpnet.save``/``xpnet.load`` and the
training checkpoints both read their files through here, so these rules live in one place.

Every failure is a ``SafetensorsFileError`` (a ValueError) whose message names the file; its
``reason`` is the same message without the file's name, for callers that name the file their own
way (``CheckpointError`` in ``xpnet.train`` is a subclass).

Host-side module: it reads the file's bytes into host NumPy arrays, and imports nothing of xpnet,
so every layer may use it.
"""

from __future__ import annotations

import json
import math

import numpy as np

__all__ = ["SafetensorsFileError", "MAX_HEADER_BYTES", "MAX_RANK", "MAX_DIM", "DTYPES", "parse_file_header",
           "array_from_body", "loads_json", "show", "is_int", "json_type", "numel"]

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors JSON header of one file, at most (100 MiB)
MAX_RANK = 16
MAX_DIM = 2**40

# safetensors dtypes -> (bytes per element, NumPy dtype or None when NumPy has no such type)
DTYPES = {
    "BOOL": (1, "|b1"), "U8": (1, "|u1"), "I8": (1, "|i1"), "U16": (2, "<u2"), "I16": (2, "<i2"),
    "U32": (4, "<u4"), "I32": (4, "<i4"), "U64": (8, "<u8"), "I64": (8, "<i8"), "F16": (2, "<f2"),
    "F32": (4, "<f4"), "F64": (8, "<f8"), "BF16": (2, None), "F8_E4M3": (1, None), "F8_E5M2": (1, None),
    "C64": (8, None),
}


class SafetensorsFileError(ValueError):
    """A safetensors file that breaks the format's rules; ``reason`` is the message without the
    file's name (the message is ``'PATH: reason'``)."""

    reason = ""


def _fail(path, reason: str) -> SafetensorsFileError:
    reason = " ".join(str(reason).split())
    error = SafetensorsFileError(f"{path}: {reason}")
    error.reason = reason
    return error


def show(value, limit: int = 80) -> str:
    """A file-supplied value for a one-line message: repr, shortened."""
    text = repr(value) if not isinstance(value, str) else repr(value[:limit]) + ("..." if len(value) > limit else "")
    return text if len(text) <= limit + 10 else text[:limit] + "..."


def is_int(value) -> bool:
    """A JSON integer (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def json_type(value) -> str:
    """What a JSON value is, in words: 'an object', 'a list', 'a string', 'null', ..."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a bool", int: "an int", float: "a float",
            type(None): "null"}.get(type(value), type(value).__name__)


def numel(shape) -> int:
    return math.prod(shape)


def loads_json(text, path, what):
    """JSON with duplicate keys refused; SafetensorsFileError naming ``what`` on any problem."""
    def pairs(items):
        out = {}
        for key, value in items:
            if key in out:
                raise ValueError(f"duplicate key {show(key)}")
            out[key] = value
        return out

    try:
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8")
        return json.loads(text, object_pairs_hook=pairs)
    except (ValueError, RecursionError, TypeError) as exc:
        raise _fail(path, f"{what} is not valid JSON ({exc})") from None


def parse_file_header(raw: bytes, path, header_len: int, file_size: int):
    """{name: {'dtype', 'shape', 'begin', 'end'}}, metadata dict and body size of a safetensors
    header; checks entries, offsets (contiguous, covering the body) and the file size."""
    doc = loads_json(raw, path, "the safetensors header")
    if not isinstance(doc, dict):
        raise _fail(path, f"the safetensors header is {json_type(doc)}, expected an object")
    metadata = doc.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _fail(path, "header field '__metadata__' must map names to strings")
    entries = {}
    for name, entry in doc.items():
        field = f"tensor {show(name)}"
        if not name:
            raise _fail(path, "a tensor has an empty name")
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _fail(path, f"{field} must be an object with exactly 'dtype', 'shape' and 'data_offsets'")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPES:
            raise _fail(path, f"{field} has unknown dtype {show(dtype)} (expected one of {', '.join(DTYPES)})")
        if DTYPES[dtype][1] is None:
            raise _fail(path, f"{field} has dtype {dtype}, which xpnet checkpoints do not use (NumPy has no such type)")
        if (not isinstance(shape, list) or len(shape) > MAX_RANK
                or not all(is_int(d) and 0 <= d <= MAX_DIM for d in shape)):
            raise _fail(path, f"{field} has shape {show(shape)}; expected a list of at most {MAX_RANK} "
                              f"non-negative ints up to {MAX_DIM}")
        if math.prod(d for d in shape if d) > MAX_DIM:
            raise _fail(path, f"{field} has shape {show(shape)}, too many elements")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(is_int(o) for o in offsets):
            raise _fail(path, f"{field} has data_offsets {show(offsets)}; expected [begin, end]")
        begin, end = offsets
        want = DTYPES[dtype][0] * numel(shape)
        if not 0 <= begin <= end or end - begin != want:
            raise _fail(path, f"{field} has data_offsets [{begin}, {end}] but dtype {dtype} and shape "
                              f"{tuple(shape)} take {want} bytes")
        entries[name] = {"dtype": dtype, "shape": list(shape), "begin": begin, "end": end}
    position = 0
    for name, entry in sorted(entries.items(), key=lambda item: (item[1]["begin"], item[1]["end"])):
        if entry["begin"] != position:
            kind = "overlaps the previous one" if entry["begin"] < position else "leaves a gap after the previous one"
            raise _fail(path, f"tensor {show(name)} starts at body byte {entry['begin']} and {kind} "
                              f"(which ends at {position}); tensors must be contiguous")
        position = entry["end"]
    expected = 8 + header_len + position
    if file_size != expected:
        how = "truncated" if file_size < expected else f"{file_size - expected} bytes of padding after the data"
        raise _fail(path, f"file is {file_size} bytes but its header describes 8 + {header_len} + {position} = "
                          f"{expected} bytes ({how})")
    return entries, metadata, position


def array_from_body(body, entry, name, path):
    """The NumPy array of one checked entry (writable, aligned)."""
    dtype = np.dtype(DTYPES[entry["dtype"]][1])
    count = numel(entry["shape"])
    if count == 0:
        return np.zeros(entry["shape"], dtype=dtype)
    array = np.frombuffer(body, dtype=dtype, count=count, offset=entry["begin"]).reshape(entry["shape"])
    if not array.flags.aligned:
        array = array.copy()
    if entry["dtype"] == "BOOL" and int(array.view(np.uint8).max()) > 1:
        raise _fail(path, f"tensor {show(name)} (BOOL) holds bytes other than 0 and 1")
    return array
