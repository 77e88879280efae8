"""aqsep: audio query-based music source separation (Lee, Choi, Lee, ISMIR 2019)."""

from aqsep.api import Separator
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
