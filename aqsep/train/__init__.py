"""Training: the cVAE with latent regressor, and export of a released model.

Loss (docs/paper.md section 5): ``L = lambda_R * L_R + lambda_KL * L_KL + lambda_lat * L_latent``
(:mod:`aqsep.train.objective`). One concern a module:

- :mod:`~aqsep.train.objective`: the loss terms of a batch and their weighted sum;
- :mod:`~aqsep.train.module`: the Lightning module (STFT on device, optimiser, validation);
- :mod:`~aqsep.train.data`: a run's tracks and the Lightning data module of excerpts;
- :mod:`~aqsep.train.spec`: :class:`RunSpec` (``run.json``) and what a resumed run may change;
- :mod:`~aqsep.train.checkpoints`: checkpoints of our own runs, written atomically, read safely;
- :mod:`~aqsep.train.run`: :func:`train`, the run and its checks;
- :mod:`~aqsep.train.classes`: the class mean latents of a released model;
- :mod:`~aqsep.train.export`: a released model from a run.
"""

from __future__ import annotations

from aqsep.train.checkpoints import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    AtomicCheckpointIO,
    last_checkpoint,
    load_checkpoint_model,
    read_checkpoint,
)
from aqsep.train.classes import class_latents, weighted_class_latents
from aqsep.train.data import ExcerptData, excerpt_samples
from aqsep.train.export import export_from_module, export_model
from aqsep.train.module import QueryTraining, is_conditioning
from aqsep.train.objective import latent_batch, training_losses, weighted_loss
from aqsep.train.run import DEFAULT_EXPORT, LOG_DIR, RunExists, TrainResult, train
from aqsep.train.spec import (
    FIXED_ON_RESUME,
    RESUMABLE,
    RUN_FILE,
    ResumeConflict,
    RunSpec,
    parse_sources,
)

__all__ = [
    "CHECKPOINT_DIR",
    "DEFAULT_EXPORT",
    "FIXED_ON_RESUME",
    "LAST_CHECKPOINT",
    "LOG_DIR",
    "RESUMABLE",
    "RUN_FILE",
    "AtomicCheckpointIO",
    "ExcerptData",
    "QueryTraining",
    "ResumeConflict",
    "RunExists",
    "RunSpec",
    "TrainResult",
    "class_latents",
    "excerpt_samples",
    "export_from_module",
    "export_model",
    "is_conditioning",
    "last_checkpoint",
    "latent_batch",
    "load_checkpoint_model",
    "parse_sources",
    "read_checkpoint",
    "train",
    "training_losses",
    "weighted_class_latents",
    "weighted_loss",
]
