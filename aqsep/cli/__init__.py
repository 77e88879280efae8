"""`aqsep` command line: parse, call the library, print. Nothing else.

Each subcommand lives in its own module of this package and exposes
``add_parser(subparsers)`` and ``run(args) -> int``. :func:`main` imports only the module of the
command it runs: ``aqsep --help`` and ``aqsep --version`` import none (and so no PyTorch).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import traceback
from collections.abc import Iterable, Iterator, Sequence
from types import FrameType
from typing import NoReturn

from aqsep import __version__
from aqsep.errors import AqsepError

# modules of this package, each with the line `aqsep --help` shows for it (the help its
# add_parser gives, which tests/cli/test_cli.py checks); each one's command is its name with "-" for "_"
SUBCOMMANDS = {
    "separate": "separate one source out of songs (by query clip, time range or class)",
    "train": "train a model on stems or MUSDB18, resume a run, or export a run's model",
    "synth": "render the offline multitrack training corpus from soundfonts",
    "evaluate": "score separations of a data set with museval",
    "experiment": "run one of the paper's experiments (figures + tables)",
    "serve": "a local web page: pick the query by ear and by eye, hear the result",
    "export_onnx": "export a model as ONNX graphs, for `aqsep separate --backend onnx`",
}


class _Parser(argparse.ArgumentParser):
    """Reports usage errors as one line, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"aqsep: error: {message} (see `{self.prog} --help`)\n")


def build_parser(modules: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``aqsep`` parser, with the full parsers of the subcommands in ``modules`` (all of
    :data:`SUBCOMMANDS` by default) and a one-line entry for each of the others.

    A module of :data:`SUBCOMMANDS` that cannot be imported is an error, never a command left out.
    """
    wanted = set(SUBCOMMANDS if modules is None else modules)
    unknown = wanted - set(SUBCOMMANDS)
    assert not unknown, f"not a subcommand module: {sorted(unknown)}"
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
    for name, line in SUBCOMMANDS.items():
        if name in wanted:
            importlib.import_module(f"aqsep.cli.{name}").add_parser(sub)
            _add_debug(sub.choices[name.replace("_", "-")])
        else:
            sub.add_parser(name.replace("_", "-"), help=line)  # listed, not parsed
    return parser


def _command_module(argv: Sequence[str]) -> list[str]:
    """The module of the command ``argv`` names (its first word that is not an option: the
    top-level options take no value), or none."""
    for word in argv:
        if not word.startswith("-"):
            module = word.replace("-", "_")
            return [module] if module in SUBCOMMANDS and "_" not in word else []
    return []


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
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_module(words)).parse_args(words)
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
