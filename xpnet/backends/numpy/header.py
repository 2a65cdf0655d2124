"""The ctypes signatures of the compiled kernels, read from their one header, ``csrc/xpnet_kernels.h``.

Every exported C function is declared once, in that header. Each .c file includes it, so the compiler
holds every definition to its declaration (a mismatch is a build error), and the build's
``-Werror=missing-prototypes`` makes an exported function that the header does not declare one too
(see native.py). The loader takes each function's argument and result types from the same
declarations: there is no second list of signatures on the Python side to drift from the C side. A
prototype this parser cannot read, or a declared function the library lacks, fails the load (the
NumPy paths run, with one warning) instead of a call through a wrong signature.

The parser reads what the header holds and nothing more: prototypes ``void name(type a, type b, ...);``
whose types are the scalars in ``SCALARS`` or pointers to them, to ``unsigned char`` or to ``void``
(``const``/``restrict`` allowed; a pointer is passed as an address, ``c_void_p``). Comments and
preprocessor lines are skipped; anything else is an error, so the header cannot hold a declaration the
loader silently ignores.
"""

from __future__ import annotations

import ctypes
import os
import re
from typing import Any, NamedTuple

HEADER_NAME = "xpnet_kernels.h"

SCALARS = {
    "int": ctypes.c_int,
    "long": ctypes.c_long,
    "ptrdiff_t": ctypes.c_ssize_t,
    "size_t": ctypes.c_size_t,
    "int32_t": ctypes.c_int32,
    "int64_t": ctypes.c_int64,
    "float": ctypes.c_float,
    "double": ctypes.c_double,
}
POINTEES = set(SCALARS) | {"void", "char", "unsigned char"}
QUALIFIERS = {"const", "restrict", "__restrict", "__restrict__", "volatile"}

_IDENTIFIER = re.compile(r"[A-Za-z_]\w*\Z")
_PROTOTYPE = re.compile(r"(?P<result>[\w\s\*]+?)\s*\b(?P<name>[A-Za-z_]\w*)\s*\((?P<params>[^()]*)\)\s*\Z", re.S)


class HeaderError(ValueError):
    """The header holds something the loader cannot turn into a ctypes signature."""


class Prototype(NamedTuple):
    name: str
    restype: Any  # None for void
    argtypes: tuple  # ctypes types, one per parameter
    params: tuple  # (C type as written, parameter name) pairs


def header_path(csrc_dir: str) -> str:
    return os.path.join(csrc_dir, HEADER_NAME)


def _strip(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _ctype(declared: str, where: str, *, result: bool = False):
    """The ctypes type of C type ``declared`` (a parameter's or, with ``result``, the return type's)."""
    words = declared.replace("*", " * ").split()
    stars = words.count("*")
    base = " ".join(w for w in words if w != "*" and w not in QUALIFIERS)
    if stars == 0:
        if result and base == "void":
            return None
        if base in SCALARS:
            return SCALARS[base]
    elif stars == 1 and base in POINTEES:
        return ctypes.c_void_p
    raise HeaderError(f"{where}: the type {declared.strip()!r} is not one the loader maps to ctypes "
                      f"(scalars: {', '.join(sorted(SCALARS))}; or a pointer to one of them, to unsigned char or "
                      f"to void)")


def parse(text: str, source: str = HEADER_NAME) -> dict:
    """{name: Prototype} of every function declared in header ``text``, in order."""
    prototypes: dict = {}
    for statement in _strip(text).split(";"):
        statement = " ".join(statement.split())
        if not statement:
            continue
        match = _PROTOTYPE.match(statement)
        if match is None:
            raise HeaderError(f"{source}: not a plain function prototype: {statement[:120]!r}")
        name = match["name"]
        where = f"{source}: {name}"
        if name in prototypes:
            raise HeaderError(f"{where} is declared twice")
        restype = _ctype(match["result"], f"{where} (result)", result=True)
        params = [p.strip() for p in match["params"].split(",")]
        if params in ([""], ["void"]):
            params = []
        argtypes, named = [], []
        for index, param in enumerate(params):
            spaced = param.replace("*", " * ").split()
            if len(spaced) < 2 or not _IDENTIFIER.match(spaced[-1]) or spaced[-1] in QUALIFIERS | POINTEES:
                raise HeaderError(f"{where}: parameter {index} ({param!r}) needs a type and a name")
            declared = param[:param.rindex(spaced[-1])].strip()
            argtypes.append(_ctype(declared, f"{where}: parameter {index} ({spaced[-1]})"))
            named.append((declared, spaced[-1]))
        prototypes[name] = Prototype(name, restype, tuple(argtypes), tuple(named))
    if not prototypes:
        raise HeaderError(f"{source}: declares no function")
    return prototypes


def read(csrc_dir: str) -> dict:
    """parse() of the header in ``csrc_dir`` (OSError when it cannot be read)."""
    path = header_path(csrc_dir)
    with open(path, encoding="utf-8") as handle:
        return parse(handle.read(), path)
