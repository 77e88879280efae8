"""aqsep: audio query-based music source separation (Lee, Choi, Lee, ISMIR 2019)."""

import os

# Before torch loads its OpenMP runtime (which reads this once): threads waiting for work sleep
# instead of spinning. Spinning took the CPU that the working threads needed whenever anything
# else ran on the machine (docs/benchmarks.md, "Whole-process speed"). A value already set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from aqsep.api import Separator  # noqa: E402
from aqsep.config import CPU, PAPER, ModelConfig, TrainConfig
from aqsep.errors import AqsepError
from aqsep.release import load_model, save_model

__version__ = "0.1.0"
__all__ = [
    "Separator",
    "ModelConfig",
    "TrainConfig",
    "CPU",
    "PAPER",
    "AqsepError",
    "load_model",
    "save_model",
]
