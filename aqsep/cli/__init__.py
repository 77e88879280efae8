"""`aqsep` command line: parse, call the library, print. Nothing else.

Each subcommand lives in its own module of this package and exposes
``add_parser(subparsers)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import traceback
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn

from aqsep import __version__
from aqsep.errors import AqsepError

# modules of this package; each one's command is its name with "-" for "_"
SUBCOMMANDS = ("separate", "train", "synth", "evaluate", "experiment", "serve", "export_onnx")


class _Parser(argparse.ArgumentParser):
    """Reports usage errors as one line, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"aqsep: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aqsep",
        description=(
            "Audio query-based music source separation: take one source out of a song, "
            "chosen by an audio example, a class name, or a blend of the two."
        ),
    )
    parser.add_argument("--version", action="version", version=f"aqsep {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"aqsep.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"aqsep.cli.{name}":
                raise
            continue  # a subcommand this build does not include
        module.add_parser(sub)
        _add_debug(sub.choices[name.replace("_", "-")])
    return parser


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after a subcommand (and its own subcommands) too: ``aqsep train ... --debug``.

    Its default is suppressed so that it never overrides ``aqsep --debug COMMAND``.
    """
    if not any("--debug" in a.option_strings for a in parser._actions):
        parser.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show full tracebacks on errors",
        )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_debug(child)


class _Signals:
    """The signal that stopped a command, if one did (for its message and exit status)."""

    received: int | None = None


def _stop(signum: int, frame: FrameType | None) -> None:
    _Signals.received = signum
    raise KeyboardInterrupt


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, systemd, ``docker stop``) stops a command as Ctrl+C does: the same
    clean-up runs (no temporary file is left), instead of the process dying on the spot. The
    previous handler is restored afterwards."""
    _Signals.received = None
    try:
        previous = signal.signal(signal.SIGTERM, _stop)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with _terminate_as_interrupt():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except AqsepError as err:
        if args.debug:
            traceback.print_exc()
        print(f"aqsep: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # a file system error no module turned into a message of its own
        if args.debug:
            traceback.print_exc()
        print(f"aqsep: error: {_os_error(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if _Signals.received == signal.SIGTERM:
            print("aqsep: terminated", file=sys.stderr)
            return 128 + signal.SIGTERM
        print("aqsep: interrupted", file=sys.stderr)
        return 130


def _os_error(err: OSError) -> str:
    where = ": ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    what = err.strerror or str(err) or type(err).__name__
    return f"{where}: {what}" if where else what


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
