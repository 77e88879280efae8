"""aqsep: audio query-based music source separation (Lee, Choi, Lee, ISMIR 2019).

The names below are imported on first use (``aqsep.Separator`` loads the API, and PyTorch with
it), so that ``aqsep --help``, ``aqsep --version`` and ``import aqsep.errors`` start without
importing torch.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# Before torch loads its OpenMP runtime (which reads this once): threads waiting for work sleep
# instead of spinning. Spinning took the CPU that the working threads needed whenever anything
# else ran on the machine (docs/benchmarks.md, "Whole-process speed"). A value already set wins.
# Every import of an aqsep module runs this file first, so it holds whatever is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_WHERE = {  # public name -> the module that defines it
    "Separator": "aqsep.api",
    "ModelConfig": "aqsep.config",
    "TrainConfig": "aqsep.config",
    "CPU": "aqsep.config",
    "PAPER": "aqsep.config",
    "AqsepError": "aqsep.errors",
    "load_model": "aqsep.release",
    "save_model": "aqsep.release",
}
__all__ = list(_WHERE)

if TYPE_CHECKING:  # for type checkers and editors: the same names, re-exported
    from aqsep.api import Separator as Separator
    from aqsep.config import CPU as CPU
    from aqsep.config import PAPER as PAPER
    from aqsep.config import ModelConfig as ModelConfig
    from aqsep.config import TrainConfig as TrainConfig
    from aqsep.errors import AqsepError as AqsepError
    from aqsep.release import load_model as load_model
    from aqsep.release import save_model as save_model


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'aqsep' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
