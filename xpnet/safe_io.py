"""Opening user files as hostile input: regular files only, never blocking, every read bounded.

Host-side module (standard library only, imports nothing of xpnet, so every layer may use it).
Dataset readers and checkpoints open their files through here, so the rules live in one place:

* only a regular file is read: a directory, FIFO, socket or device (``/dev/zero``) given where a
  file is expected is a ``NotARegularFileError`` (a ValueError) naming the path and what it is. The
  path is checked with ``os.stat`` before it is opened, so a FIFO or device is never opened, and
  again with ``os.fstat`` on the open descriptor, so a file swapped in between is caught too. The
  open uses ``O_NONBLOCK``, so even that race cannot leave a FIFO blocking the reader.
* a read takes at most a stated number of bytes, checked against the file's size before anything
  is read (``read_bounded``).
* a ``MemoryError`` while a file is read or decoded names the file and its size
  (``memory_guard``); other ``OSError`` (permissions, I/O errors) is not a data problem and passes
  through unchanged.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_BINARY", 0))


class NotARegularFileError(ValueError):
    """A directory, FIFO, socket or device where a file to read is expected; ``kind`` says which."""

    kind = "not a regular file"


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words: ``'a FIFO (named pipe)'``, ``'a directory'``, ..."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return f"a special file (mode 0o{stat.S_IFMT(mode):o})"


def _require_regular(path, what, mode):
    if not stat.S_ISREG(mode):
        error = NotARegularFileError(f"{path}: expected {what} as a regular file, found {file_kind(mode)}; "
                                     f"only regular files are read")
        error.kind = file_kind(mode)
        raise error


def regular_size(path, what: str) -> int:
    """The size of ``path`` after checking, without opening it, that it is a regular file
    (symbolic links followed). A missing path is a FileNotFoundError naming it and ``what``."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} does not exist (or is a broken symbolic link)") from None
    _require_regular(path, what, info.st_mode)
    return info.st_size


def open_regular_fd(path, what: str) -> tuple[int, int]:
    """(descriptor, size) of the regular file ``path`` opened read-only and non-blocking; anything
    else is refused before it is opened (see the module docstring). The caller closes the descriptor."""
    regular_size(path, what)
    descriptor = os.open(path, _OPEN_FLAGS)
    try:
        info = os.fstat(descriptor)
        _require_regular(path, what, info.st_mode)  # swapped for something else since the stat
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor, info.st_size


@contextlib.contextmanager
def open_regular(path, what: str):
    """``with open_regular(path, 'IDX file') as (handle, size):`` a binary handle on a regular file
    and its size (``open_regular_fd`` as a file object)."""
    descriptor, size = open_regular_fd(path, what)
    try:
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with handle:
        yield handle, size


def check_size(path, what: str, size: int, max_bytes: int, reason: str) -> None:
    """Refuse a file larger than ``max_bytes``; ``reason`` says where the bound comes from."""
    if size > max_bytes:
        raise ValueError(f"{path}: {what} of {size} bytes is larger than the {max_bytes} bytes accepted ({reason})")


def read_bounded(path, what: str, max_bytes: int, reason: str) -> bytes:
    """All of the regular file ``path``, refused unread when it holds more than ``max_bytes``."""
    with open_regular(path, what) as (handle, size):
        check_size(path, what, size, max_bytes, reason)
        content = handle.read(size + 1)  # read(n) reserves n bytes first: never more than the file
    check_size(path, what, len(content), max_bytes, reason)  # it grew while being read
    return content


def read_stream_bounded(stream, max_bytes: int, chunk: int = 1 << 20) -> bytes:
    """Up to ``max_bytes + 1`` bytes of a stream of unknown length, in chunks (a stream's
    ``read(n)`` may reserve all ``n`` bytes before reading any), so the caller can tell a stream
    longer than ``max_bytes`` having read no more than that."""
    if isinstance(stream, io.BytesIO):  # its read(n) reserves no more than it holds, and copies nothing
        return stream.read(max_bytes + 1)
    pieces, total = [], 0
    while total <= max_bytes:
        piece = stream.read(min(chunk, max_bytes + 1 - total))
        if not piece:
            break
        pieces.append(piece)
        total += len(piece)
    return b"".join(pieces)


@contextlib.contextmanager
def memory_guard(path, action: str):
    """Re-raise a ``MemoryError`` inside the block as one naming ``path``, its size and ``action``."""
    try:
        yield
    except MemoryError:
        try:
            size = f"{os.stat(path).st_size} bytes on disk"
        except OSError:
            size = "size unknown"
        raise MemoryError(f"{path}: out of memory while {action} ({size})") from None
