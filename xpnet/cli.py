"""The ``xpnet`` command: ``xpnet info | train | eval | bench``.

Errors print one or two lines (``--debug`` shows the traceback) and exit 2 for a usage error,
1 for a runtime failure (see ``describe_error``); Ctrl-C exits 130, SIGTERM during training 143.
"""

from __future__ import annotations

import argparse
import sys


def _cmd_info(args) -> int:
    from .info import info_text

    print(info_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xpnet", description="xpnet: neural networks on NumPy and CuPy")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command")
    p_info = sub.add_parser("info", help="versions, backends, CUDA devices and BLAS (paste into bug reports)")
    p_info.set_defaults(func=_cmd_info)
    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


# later modules add their subcommands here: a function taking the subparsers object
_EXTRA_COMMANDS: list = []


def _load_extra_commands():
    import importlib

    for module_name in ("xpnet.train.cli", "xpnet.bench", "xpnet.models.weights"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        register = getattr(module, "register_cli", None)
        if register is not None and register not in _EXTRA_COMMANDS:
            _EXTRA_COMMANDS.append(register)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        _load_extra_commands()
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("xpnet: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        code, text = describe_error(exc)
        print(text, file=sys.stderr)
        print("(run with --debug for the full traceback)", file=sys.stderr)
        return code


def describe_error(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an error that ends a command.

    2: a usage error (argument, file, checkpoint, data, environment); 1: a runtime failure
    (training diverged, disk full, out of memory). Every message names what it is about.
    """
    import errno

    from .backends import BackendUnavailableError

    if isinstance(exc, BackendUnavailableError):
        return 2, f"xpnet: backend unavailable: {exc}"
    if isinstance(exc, FloatingPointError):  # TrainingDiverged
        return 1, f"xpnet: training diverged: {exc}"
    if isinstance(exc, MemoryError):
        detail = str(exc) or "no detail from the allocator"
        return 1, (f"xpnet: out of memory ({detail}); lower --batch-size or --image-size, "
                   f"or use a machine with more memory")
    if isinstance(exc, FileNotFoundError) and exc.filename is None:
        return 2, f"xpnet: error: {exc}"
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else "?"
        reason = exc.strerror or str(exc)
        code = 2 if exc.errno in (errno.ENOENT, errno.EACCES, errno.EISDIR, errno.ENOTDIR, errno.EROFS) else 1
        return code, f"xpnet: error: {reason}: {where}"
    if isinstance(exc, (ValueError, TypeError)):
        return 2, f"xpnet: error: {exc}"
    return 1, f"xpnet: {type(exc).__name__}: {exc}"

if __name__ == "__main__":
    raise SystemExit(main())
