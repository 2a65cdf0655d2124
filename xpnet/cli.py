"""The ``xpnet`` command: ``xpnet info | train | eval | bench``.

Errors a user can cause print one or two lines and exit 2; ``--debug`` shows the traceback.
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

    for module_name in ("xpnet.train.cli", "xpnet.bench"):
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
        from .backends import BackendUnavailableError

        if isinstance(exc, BackendUnavailableError):
            print(f"xpnet: backend unavailable: {exc}", file=sys.stderr)
        elif isinstance(exc, (ValueError, TypeError, FileNotFoundError, FloatingPointError)):
            print(f"xpnet: error: {exc}", file=sys.stderr)
        else:
            print(f"xpnet: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("(run with --debug for the full traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
