"""Run directories of ``xpnet train``: never overwrite an earlier run, prove the folder writable
before the first step, clear what a killed save left behind.

Rules (the README's training section states them for users):
- a directory that holds files is an earlier run: it is continued only by ``--resume`` (the
  checkpoint's own directory by default), replaced only with ``--overwrite``; otherwise the next
  free name ``DIR-2``, ``DIR-3``, ... is taken (created atomically, so two runs started at once
  cannot share one) and the caller says so;
- ``--overwrite`` removes only the files a run writes (``RUN_FILES``), never anything else;
- a probe file is written and removed up front, so an unwritable, read-only or full folder is an
  error before training instead of after the first epoch;
- ``.tmp-*.part`` files of an interrupted atomic write are removed from the directory at start.
"""

from __future__ import annotations

import errno
import os

from .checkpoint import atomic_write_bytes, remove_stale_temporaries

RUN_FILES = ("checkpoint.safetensors", "interrupted.safetensors", "history.csv", "curves.png")
PROBE_NAME = ".xpnet-write-probe"
MAX_SUFFIX = 10_000  # DIR-2 .. DIR-10000: past that something is wrong with the folder, say so


class RunDirError(ValueError):
    """The output folder cannot be used (named in the message)."""


def _holds_files(path: str) -> bool:
    try:
        with os.scandir(path) as entries:
            return any(True for _ in entries)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return True


def _make_fresh(path: str) -> bool:
    """Create ``path`` (and its parents); False if something already has that name."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"--out {path!r} cannot be created: {parent} is not a folder that can hold it "
                          f"({exc.strerror or exc})") from None
    try:
        os.mkdir(path)
        return True
    except FileExistsError:
        return os.path.isdir(path) and not os.path.islink(path) and not _holds_files(path)
    except OSError as exc:
        raise RunDirError(f"--out {path!r} cannot be created ({exc.strerror or exc})") from None


def choose_run_dir(out: str, *, resume: str | None = None, overwrite: bool = False) -> tuple[str, str | None]:
    """(directory to write, note for the user or None). See the module docstring for the rules."""
    if os.path.islink(out):
        raise RunDirError(f"--out {out!r} is a symbolic link; give the real folder")
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunDirError(f"--out {out!r} exists and is not a folder")
    if resume is not None and os.path.isdir(out):
        checkpoint_dir = os.path.dirname(os.path.abspath(resume))
        if os.path.isdir(checkpoint_dir) and os.path.samefile(checkpoint_dir, out):
            return out, None  # --resume continues the run it came from
    if overwrite and os.path.isdir(out):
        removed = []
        for name in RUN_FILES:
            target = os.path.join(out, name)
            if os.path.lexists(target):
                os.unlink(target)
                removed.append(name)
        note = f"--overwrite: removed {', '.join(removed)} from {out}" if removed else None
        return out, note
    if _make_fresh(out):
        return out, None
    for suffix in range(2, MAX_SUFFIX + 1):
        candidate = f"{out}-{suffix}"
        if _make_fresh(candidate):
            return candidate, (f"{out} holds an earlier run, so this run writes to {candidate} "
                               f"(--resume continues a run, --overwrite replaces it)")
    raise RunDirError(f"--out {out!r}: {out}-2 .. {out}-{MAX_SUFFIX} are all taken; give another --out")


def prepare_run_dir(path: str) -> list:
    """Check that ``path`` takes a write (probe file written atomically, then removed) and remove
    stale temporaries. Returns the temporaries removed. RunDirError names the folder and the reason."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, PROBE_NAME)
        atomic_write_bytes(probe, b"xpnet write probe\n")
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.ENOSPC:
            reason = "no space left on the device"
        raise RunDirError(f"--out {path!r} cannot be written ({reason}); choose another folder") from None
    return remove_stale_temporaries(path)
