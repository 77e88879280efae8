"""argparse ``type=`` converters shared by the subcommands (one-line messages on bad values), and
the chunking options that `aqsep separate`, `aqsep evaluate` and `aqsep experiment` share."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from aqsep.api import (
    DEVICES,
    MAX_BATCH_SIZE,
    MAX_OVERLAP,
    MAX_SEGMENT_SECONDS,
    check_batch_size,
    check_overlap,
    check_segment,
)
from aqsep.errors import SettingError


def _int_at_least(text: str, minimum: int, requirement: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {value}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (steps, batch sizes, worker counts...)."""
    return _int_at_least(text, 1, "at least 1")


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (refinement steps, data-loading workers...)."""
    return _int_at_least(text, 0, "0 or more")


def checked_float(
    text: str, valid: Callable[[float], bool], not_a_number: str, out_of_range: str
) -> float:
    """``float(text)`` if ``valid`` accepts it (NaN never passes a comparison). The messages are
    formatted with ``text`` (as typed) and, for ``out_of_range``, ``value`` (as parsed)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(not_a_number.format(text=text)) from None
    if not valid(value):
        raise argparse.ArgumentTypeError(out_of_range.format(text=text, value=value))
    return value


def _checked(text: str, parse: Callable[[str], Any], check: Callable[[Any], Any], what: str) -> Any:
    """``check(parse(text))``, its :class:`~aqsep.errors.SettingError` worded for argparse: the
    ranges are the library's own (``aqsep.api.check_*``), decided there once."""
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    try:
        return check(value)
    except SettingError as err:  # "overlap must be ...": argparse names the option itself
        _, _, requirement = str(err).partition(" must ")
        raise argparse.ArgumentTypeError(
            f"must {requirement}" if requirement else str(err)
        ) from None


def segment_seconds(text: str) -> float:
    """A chunk length in seconds (:func:`aqsep.api.check_segment`)."""
    return _checked(text, float, check_segment, "a number of seconds")


def overlap_fraction(text: str) -> float:
    """The share of a chunk overlapping the next (:func:`aqsep.api.check_overlap`)."""
    return _checked(text, float, check_overlap, "a number")


def batch_size(text: str) -> int:
    """Chunks per forward pass (:func:`aqsep.api.check_batch_size`)."""
    return _checked(text, int, check_batch_size, "a whole number")


def add_chunk_arguments(parser: argparse.ArgumentParser) -> None:
    """``--segment``, ``--overlap``, ``--batch-size`` and ``--device``: how a Separator runs."""
    parser.add_argument(
        "--segment",
        type=segment_seconds,
        metavar="S",
        help=f"chunk length in seconds, at most {MAX_SEGMENT_SECONDS:g} and never longer than "
        "the input (default: the model's excerpt length); memory grows with it",
    )
    parser.add_argument(
        "--overlap",
        type=overlap_fraction,
        default=0.25,
        metavar="R",
        help=f"fraction of each chunk shared with the next, from 0 to {MAX_OVERLAP:g} "
        "(default 0.25)",
    )
    parser.add_argument(
        "--batch-size",
        type=batch_size,
        metavar="B",
        help=f"chunks per forward pass, at most {MAX_BATCH_SIZE}; memory grows with it "
        "(default: as many as make about 12 s of audio, 4 for the fast model, 1 for the default)",
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where the network runs (default: auto, a GPU if there is one)",
    )


def chunk_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``Separator(model, ...)`` given by :func:`add_chunk_arguments`."""
    return {
        "device": args.device,
        "segment": args.segment,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
    }
