"""Unpickling dataset files as hostile input: no code runs, and no small file costs gigabytes.

Host-side module: it imports NumPy. CIFAR's python version is the one pickled format the readers
read; ``RestrictedUnpickler`` is sized for it. Three layers, each refusing with an
``UnsafePickleError`` (a ``pickle.UnpicklingError`` and a ``ValueError``) that names the source,
the value found and the bound:

1. Names. ``find_class`` admits only the NumPy reconstruction names an array needs, each through
   a guard that refuses arguments no pickled array carries: ``_reconstruct`` only with the empty
   shape NumPy writes (the data comes with the array's state, whose size NumPy checks against its
   shape), ``scalar`` only with exactly one item's bytes, ``dtype`` only for bool and numeric
   types; ``ndarray`` is admitted only as ``_reconstruct``'s argument, never as a call.
2. Opcodes, read before anything is built (with ``pickletools``' table of them): at most
   ``MAX_PICKLE_OPCODES`` of them (each can build an object, so a file of one-byte opcodes could
   otherwise build hundreds of millions), and no memo index beyond the opcodes read so far (the
   unpickler sizes its memo by the largest index, so one 5-byte opcode could ask for gigabytes).
3. The result, walked before any caller touches it: containers nested at most
   ``MAX_PICKLE_DEPTH`` deep, at most ``MAX_PICKLE_ITEMS`` container entries and
   ``MAX_PICKLE_BYTES`` of strings and array data, each shared object counted once per reference
   (a few hundred bytes of shared references make a list whose size doubles per level: cheap to
   unpickle, but ``np.asarray`` or ``str`` would expand it to gigabytes), no cycles, and only
   plain containers, strings, numbers and non-object NumPy arrays.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re

import numpy as np

from ...safe_io import check_size, read_stream_bounded

# The largest legitimate dataset pickle is CIFAR-100's python ``train`` file: 50,000 images of
# 3,072 bytes, each with a fine and a coarse label and a filename (155 MB as published). The bounds
# allow 60,000 images, all of CIFAR, in one file, pickled by Python 2 or 3 with any protocol.
MAX_IMAGES_PER_FILE = 60_000
_PIXELS = 3 * 32 * 32
# strings and array data built: the pixels, plus 256 bytes an image for its labels and filename
MAX_PICKLE_BYTES = MAX_IMAGES_PER_FILE * (_PIXELS + 256)
# the file: Python 3 writes bytes under protocols 0 to 2 as latin-1 text in UTF-8, 2 bytes a pixel
# at most (a re-pickled CIFAR-100 train file is 233 MB)
MAX_PICKLE_FILE_BYTES = MAX_IMAGES_PER_FILE * (2 * _PIXELS + 256)
MAX_PICKLE_ITEMS = 4 * MAX_IMAGES_PER_FILE + 1024  # entries: up to 3 per-image lists (labels, filenames)
MAX_PICKLE_OPCODES = 16 * MAX_IMAGES_PER_FILE + 4096  # protocol 0 takes 14 an image, the others 4 to 10
MAX_PICKLE_DEPTH = 4  # a batch is a dict of lists: 2 levels, and 2 to spare
_LIMIT_NOTE = f"bounds sized for a CIFAR file of up to {MAX_IMAGES_PER_FILE} images"


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for a global that ``RestrictedUnpickler`` does not admit, or for more objects,
    bytes or nesting than a dataset file can legitimately hold."""


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _numpy_scalar():
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # NumPy < 2
        from numpy.core.multiarray import scalar
    return scalar


class _Admitted:
    """An admitted global as the unpickler sees it: a fresh object per lookup that only calls its
    guard, so a pickle's BUILD opcodes cannot change what a later lookup or load gets."""

    __slots__ = ("guard",)

    def __init__(self, guard):
        self.guard = guard

    def __call__(self, *args):
        return self.guard(*args)


class _NDArrayName:
    """What ``numpy.ndarray`` unpickles as: ``_reconstruct``'s first argument, never called
    (called, it would allocate an array of the pickle's chosen shape)."""

    __slots__ = ()

    def __call__(self, *args):
        raise UnsafePickleError(f"numpy.ndarray is admitted only as the first argument of _reconstruct, never "
                                f"called (it would allocate an array of the pickle's chosen shape: {args!r:.80})")


def _reconstruct(subtype, shape, dtype_code):
    if not isinstance(subtype, _NDArrayName) or tuple(shape) != (0,) or dtype_code not in (b"b", "b"):
        raise UnsafePickleError(f"_reconstruct is admitted only as _reconstruct(numpy.ndarray, (0,), b'b'), as "
                                f"NumPy pickles an array; got {type(subtype).__name__}, shape {shape!r:.80} and "
                                f"code {dtype_code!r:.20}")
    return _numpy_reconstruct()(np.ndarray, (0,), b"b")


def _scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes) or len(data) != dtype.itemsize:
        size = len(data) if isinstance(data, bytes) else type(data).__name__
        raise UnsafePickleError(f"numpy scalar is admitted only as scalar(dtype, bytes of one item), got {dtype!r:.40} "
                                f"with {size} bytes")
    return _numpy_scalar()(dtype, data)


_NUMERIC_DTYPE = re.compile(r"b1|[iu][1248]|f(2|4|8|12|16)|c(8|16|24|32)")


def _dtype(spec, align=False, copy=False):
    if isinstance(spec, bytes):  # Python 2 pickles, read with encoding="bytes"
        spec = spec.decode("latin1")
    if not isinstance(spec, str) or not _NUMERIC_DTYPE.fullmatch(spec):
        raise UnsafePickleError(f"numpy dtype is admitted only for bool and numeric types (b1, i1..i8, u1..u8, "
                                f"f2..f16, c8..c32), got {spec!r:.40}")
    return np.dtype(spec, bool(align), bool(copy))


_LATIN1_NAMES = ("latin1", "latin-1", "iso8859-1", "iso-8859-1", "l1")


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """Python 3 writes bytes under pickle protocol 2 as ``_codecs.encode(text, 'latin1')``; only
    that codec is admitted."""
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in _LATIN1_NAMES or errors != "strict":
        raise UnsafePickleError(f"_codecs.encode is admitted only as encode(str, 'latin1'), got encoding {encoding!r}")
    return text.encode("latin1", errors)


# (module, name) -> the guarded object; modules as NumPy 1 and 2 name them in pickles
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): None,  # see find_class
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1_encode,
}


def _refuse(source, what):
    raise UnsafePickleError(f"{source}: refusing pickle: {what} ({_LIMIT_NOTE})")


def _opcode_layouts():
    """opcode byte -> (name, argument layout) from ``pickletools``' table: ``('fixed', n)``,
    ``('lines', count)`` or ``('sized', width of the length, signed)``."""
    sized = {pickletools.TAKEN_FROM_ARGUMENT1: (1, False), pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
             pickletools.TAKEN_FROM_ARGUMENT4U: (4, False), pickletools.TAKEN_FROM_ARGUMENT8U: (8, False)}
    table = {}
    for op in pickletools.opcodes:
        n = 0 if op.arg is None else op.arg.n
        if n >= 0:
            layout = ("fixed", n)
        elif n == pickletools.UP_TO_NEWLINE:
            layout = ("lines", 2 if op.arg.name == "stringnl_noescape_pair" else 1)
        else:
            layout = ("sized",) + sized[n]
        table[op.code.encode("latin1")[0]] = (op.name, layout)
    return table


_OPCODES = _opcode_layouts()
_MEMO_INDEX = {"BINPUT": 1, "BINGET": 1, "LONG_BINPUT": 4, "LONG_BINGET": 4, "PUT": 0, "GET": 0}  # 0: text


def _scan_opcodes(content, source):
    """Layer 2: count the opcodes and check the memo indices, building nothing. Returns None, or
    for a malformed stream ``(end, message)``: ``end`` is where the last well-formed opcode ends,
    as far as the unpickler may be allowed to go (it fails there too, or earlier)."""
    position, count, length = 0, 0, len(content)
    while True:
        if position >= length:
            return position, "malformed pickle: the data ends before the STOP opcode"
        start = position
        entry = _OPCODES.get(content[position])
        if entry is None:
            return start, f"malformed pickle: unknown opcode 0x{content[position]:02x} at byte {position}"
        name, layout = entry
        count += 1
        if count > MAX_PICKLE_OPCODES:
            _refuse(source, f"more than {MAX_PICKLE_OPCODES} opcodes (MAX_PICKLE_OPCODES)")
        position += 1
        if layout[0] == "fixed":
            argument = content[position:position + layout[1]]
            position += layout[1]
        elif layout[0] == "lines":
            for _ in range(layout[1]):
                newline = content.find(b"\n", position)
                position = length + 1 if newline < 0 else newline + 1
            argument = content[start + 1:position - 1]
        else:
            width, signed = layout[1], layout[2]
            size = int.from_bytes(content[position:position + width], "little", signed=signed)
            position += width + max(size, 0)
            argument = None
        if position > length:
            return start, f"malformed pickle: opcode {name} at byte {start} runs past the end of the data"
        if name in _MEMO_INDEX:
            try:
                index = int(argument) if _MEMO_INDEX[name] == 0 else int.from_bytes(argument, "little")
            except ValueError:
                return start, f"malformed pickle: memo index {argument[:20]!r} at byte {start}"
            if not 0 <= index < count:
                _refuse(source, f"memo index {index} at opcode {count}; accepted 0..{count - 1}, as a memo "
                                f"index cannot exceed the objects built so far")
        if name == "STOP":
            return None


_SCALARS = (bool, int, float, complex, type(None), np.generic, np.dtype)


def _check_result(root, source):
    """Layer 3: walk what was built, each shared object once (its totals are remembered), but
    counting its entries and bytes once per reference."""
    known = {}  # id -> (entries, bytes, height: containers nested inside, itself included)
    open_ids = set()
    totals = [0, 0]

    def add(entries, size):
        totals[0] += entries
        totals[1] += size
        if totals[0] > MAX_PICKLE_ITEMS:
            _refuse(source, f"more than {MAX_PICKLE_ITEMS} container entries (MAX_PICKLE_ITEMS), shared "
                            f"references counted each time")
        if totals[1] > MAX_PICKLE_BYTES:
            _refuse(source, f"more than {MAX_PICKLE_BYTES} bytes of strings and arrays (MAX_PICKLE_BYTES), shared "
                            f"references counted each time")

    def visit(obj, depth):
        key = id(obj)
        if key in known:
            entries, size, height = known[key]
            if depth + height > MAX_PICKLE_DEPTH:
                _refuse(source, f"containers nested {depth + height} deep; accepted at most {MAX_PICKLE_DEPTH}")
            add(entries, size)
            return known[key]
        if isinstance(obj, (bytes, str)):
            result = (0, len(obj), 0)
        elif isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                _refuse(source, f"a NumPy array of dtype {obj.dtype}; only non-object arrays are accepted")
            result = (0, obj.nbytes, 0)
        elif isinstance(obj, _SCALARS):
            result = (0, (obj.bit_length() + 7) // 8 if isinstance(obj, int) else 0, 0)
        elif type(obj) in (list, tuple, dict):
            if depth >= MAX_PICKLE_DEPTH:
                _refuse(source, f"containers nested more than {MAX_PICKLE_DEPTH} deep")
            if key in open_ids:
                _refuse(source, f"a {type(obj).__name__} that contains itself")
            add(len(obj), 0)
            kinds = set(map(type, obj)) if type(obj) is not dict else None
            if kinds is not None and kinds <= {int, bool}:  # lists of labels: counted at C speed
                size = (sum(map(int.bit_length, obj)) + 7 * len(obj)) // 8
                add(0, size)
                known[key] = (len(obj), size, 1)
                return known[key]
            if kinds is not None and (kinds <= {bytes} or kinds <= {str}):  # lists of names
                size = sum(map(len, obj))
                add(0, size)
                known[key] = (len(obj), size, 1)
                return known[key]
            open_ids.add(key)
            children = [part for pair in obj.items() for part in pair] if type(obj) is dict else obj
            entries, size, height = len(obj), 0, 1
            for child in children:
                child_entries, child_size, child_height = visit(child, depth + 1)
                entries, size, height = entries + child_entries, size + child_size, max(height, child_height + 1)
            open_ids.discard(key)
            known[key] = (entries, size, height)
            return known[key]
        else:
            _refuse(source, f"an object of type {type(obj).__name__}; accepted: dict, list, tuple, bytes, str, "
                            f"numbers and NumPy arrays")
        add(0, result[1])
        known[key] = result
        return result

    visit(root, 0)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only NumPy arrays, dtypes, scalars and plain Python containers, in
    the amounts a dataset file can hold (see the module docstring).

    It reads at most ``MAX_PICKLE_FILE_BYTES`` (and one more, to tell a larger stream) from ``file``
    when created; ``load`` checks the opcodes, unpickles and checks the result.
    """

    source = "pickle"

    def __init__(self, file, **options):
        self._content = read_stream_bounded(file, MAX_PICKLE_FILE_BYTES)
        self._stream = io.BytesIO(self._content)
        super().__init__(self._stream, **options)

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(
                f"{self.source}: refusing to load global {module}.{name}: only NumPy array data is allowed "
                f"in a dataset pickle (admitted: {', '.join(sorted(f'{m}.{n}' for m, n in _ALLOWED))})")
        guard = _ALLOWED[module, name]
        return _NDArrayName() if guard is None else _Admitted(guard)

    def load(self):
        check_size(self.source, "a dataset pickle", len(self._content), MAX_PICKLE_FILE_BYTES, _LIMIT_NOTE)
        malformed = _scan_opcodes(self._content, self.source)
        if malformed is not None:  # run only the opcodes the scan checked; they end without STOP
            self._stream.truncate(malformed[0])
        try:
            result = super().load()
        except UnsafePickleError as exc:
            if str(exc).startswith(f"{self.source}: "):
                raise
            raise UnsafePickleError(f"{self.source}: refusing pickle: {exc}") from None  # a guard's refusal
        except (EOFError, pickle.UnpicklingError):
            if malformed is None:
                raise
            raise pickle.UnpicklingError(malformed[1]) from None
        if malformed is not None:
            raise pickle.UnpicklingError(malformed[1])
        _check_result(result, self.source)
        return result
