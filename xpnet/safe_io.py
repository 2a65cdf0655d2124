"""Files on disk: user files read as hostile input (regular files only, never blocking, every read
bounded), and files written atomically.

Host-side module (standard library only, imports nothing of xpnet, so every layer may use it).
Dataset readers, ``xpnet.save``/``xpnet.load`` and checkpoints open and write their files through
here, so the rules live in one place:

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
* a write (``atomic_write_bytes``) goes to a temporary file ``.tmp-XXXXXXXX.part`` in the target's
  folder, is fsynced and renamed over the target, so readers see the old file or the new one, never
  half; ``remove_stale_temporaries`` clears what a killed write left behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import tempfile

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_BINARY", 0))
TEMP_PREFIX, TEMP_SUFFIX = ".tmp-", ".part"
TEMP_PATTERN = re.compile(r"\.tmp-[A-Za-z0-9_]{1,64}\.part")  # mkstemp's names with our prefix and suffix


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


class ShortRead(EOFError):
    """The file ended ``done`` bytes into a read of ``count`` (``read_exactly``)."""

    def __init__(self, done: int, count: int):
        super().__init__(f"the file ended after {done} of {count} bytes")
        self.done, self.count = done, count


def read_exactly(fd: int, count: int) -> bytearray:
    """``count`` bytes from ``fd``, read into one buffer until it is full; ``ShortRead`` when the file
    ends first (an ``OSError`` passes through). The callers name the file in their own errors."""
    buffer = bytearray(count)
    view, done = memoryview(buffer), 0
    while done < count:
        got = os.readv(fd, [view[done:]])
        if got == 0:
            raise ShortRead(done, count)
        done += got
    return buffer


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


# ------------------------------------------------------------------------------------- writing
def _write_error(exc: OSError, path: str) -> OSError:
    """``exc`` again (same errno, so the same OSError subclass) with a message naming the file."""
    folder, name = os.path.split(os.path.abspath(path))
    reason = exc.strerror or str(exc) or type(exc).__name__
    message = f"cannot write {name} in {folder}: {reason}"
    return OSError(exc.errno, message) if exc.errno is not None else OSError(message)


def atomic_write_bytes(path: str, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that readers see the old file or the new one, never half.

    A symbolic link at ``path`` is replaced by the file, never followed. On failure the temporary
    file is removed and an OSError with the original errno names the file and the folder.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
    try:
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)  # replaces a link at ``path`` itself
        except OSError as exc:
            raise _write_error(exc, path) from exc
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


def remove_stale_temporaries(folder) -> list:
    """Delete the ``.tmp-XXXXXXXX.part`` files an interrupted ``atomic_write_bytes`` (kill -9) left
    in ``folder``: regular files whose names match ``TEMP_PATTERN`` exactly; links and anything else
    are left alone (and never followed). Returns the paths removed. Call it when no save into
    ``folder`` is under way (a run's start)."""
    folder = os.fspath(folder)
    removed = []
    try:
        dir_fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return removed
    try:
        for name in os.listdir(dir_fd):
            if not TEMP_PATTERN.fullmatch(name):
                continue
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISREG(info.st_mode):
                    os.unlink(name, dir_fd=dir_fd)  # unlink never follows a link
                    removed.append(os.path.join(folder, name))
            except FileNotFoundError:
                continue
    finally:
        os.close(dir_fd)
    return removed
