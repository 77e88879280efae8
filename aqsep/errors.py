"""Exceptions that aqsep raises for user errors.

The core never prints or exits: it raises one of these with a message that says what is
wrong and what to do. The CLI turns them into one line on stderr and a non-zero exit.
"""

from __future__ import annotations


class AqsepError(Exception):
    """Base class of every user-facing error."""

    exit_code = 2


class AudioError(AqsepError):
    """An audio file cannot be read, is empty, corrupt, or holds invalid samples."""


class QueryError(AqsepError):
    """A query cannot be turned into a latent (silent clip, unknown class, bad range...)."""


class ModelError(AqsepError):
    """A model folder is missing, inconsistent, or not in the safe released format."""


class DataError(AqsepError):
    """A training or evaluation data set is malformed."""


class OutputError(AqsepError):
    """An output cannot be written (permissions, full disk, ...)."""


class SettingError(AqsepError, ValueError):
    """A setting is out of range or of the wrong type (segment, overlap, batch size, device...).

    Also a :class:`ValueError`, so that code catching that for bad arguments keeps working.
    """
