"""argparse ``type=`` converters shared by the subcommands: one-line messages on bad values."""

from __future__ import annotations

import argparse
from collections.abc import Callable


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
