"""argparse ``type=`` converters shared by the subcommands: one-line messages on bad values."""

from __future__ import annotations

import argparse


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
