"""Backend-independent dtype names: ``xpnet.float32`` resolves to each namespace's own dtype."""

from __future__ import annotations

_FLOATS = ("float16", "bfloat16", "float32", "float64")
_NAMES = _FLOATS + ("int8", "int16", "int32", "int64", "uint8", "bool")


class DType(str):
    """A dtype name that compares equal to the same dtype of any backend.

    ``xpnet.float32 == np.float32``, ``== array_api_strict.float32`` and ``== torch.float32``
    all hold, so user code can test dtypes without knowing the backend.
    """

    def __eq__(self, other):
        try:
            return str.__eq__(self, dtype_name(other))
        except TypeError:
            return NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = str.__hash__

    def __repr__(self):
        return f"xpnet.{str(self)}"


float16, bfloat16, float32, float64 = (DType(n) for n in _FLOATS)
int8, int16, int32, int64, uint8 = (DType(n) for n in ("int8", "int16", "int32", "int64", "uint8"))
bool_ = DType("bool")


# type(dtype) -> {dtype: canonical name}, filled on first sight of each dtype object: NumPy's
# ``dtype.name`` is a Python-level property (two issubdtype calls, about 2 us), and names are asked
# for several times per operation. One table per dtype type, so that keys of different libraries
# never meet in an equality test (array_api_strict dtypes hash like NumPy's and warn when compared
# with them). Names (str, DType) are not kept: they are cheap to check, and DType's == calls
# dtype_name. Only dtypes that name successfully are kept: errors are raised afresh each time.
_NAME_OF: dict = {}
_CACHE_LIMIT = 1024  # per dtype type: dtypes are few; a bound against endless distinct objects


def dtype_name(dtype) -> str:
    """The canonical name of a dtype of any backend (``'float32'``, ``'int64'``, ``'bool'``)."""
    names = _NAME_OF.get(type(dtype))
    if names is not None:
        try:
            return names[dtype]
        except (KeyError, TypeError):  # not seen yet, or unhashable
            pass
    name = _dtype_name(dtype)
    if isinstance(dtype, str):
        return name
    if names is None:
        names = _NAME_OF.setdefault(type(dtype), {})
    try:
        if len(names) < _CACHE_LIMIT:
            names[dtype] = name
    except TypeError:
        pass
    return name


def _dtype_name(dtype) -> str:
    if isinstance(dtype, str):
        name = str(dtype)
    elif isinstance(dtype, type):  # NumPy scalar types: np.float32
        name = dtype.__name__
    else:
        name = getattr(dtype, "name", None)
        if name is None:
            # torch.float32 prints as 'torch.float32'; array_api_strict dtypes carry _np_dtype
            np_dtype = getattr(dtype, "_np_dtype", None)
            name = np_dtype.name if np_dtype is not None else str(dtype).rsplit(".", 1)[-1]
    if name == "bool_":
        name = "bool"
    if name not in _NAMES:
        raise TypeError(f"unknown dtype {dtype!r}; expected one of {', '.join(_NAMES)}")
    return name


def is_float_dtype(dtype) -> bool:
    try:
        return dtype_name(dtype) in _FLOATS
    except TypeError:
        return False


_default_float = float32


def set_default_dtype(dtype) -> None:
    """Set the floating dtype that factories and new layers use (float32 unless set)."""
    global _default_float
    name = dtype_name(dtype)
    if name not in _FLOATS:
        raise TypeError(f"set_default_dtype: expected a floating dtype, got {name}")
    _default_float = DType(name)


def get_default_dtype() -> DType:
    return _default_float


def resolve_dtype(xp, dtype):
    """The namespace's dtype object for ``dtype`` (a name, an xpnet DType or a native dtype)."""
    if dtype is None:
        dtype = _default_float
    name = dtype_name(dtype)
    if name == "bool":
        return xp.bool
    native = getattr(xp, name, None)
    if native is None:
        raise TypeError(f"dtype {name} is not supported by namespace {xp.__name__}")
    return native
