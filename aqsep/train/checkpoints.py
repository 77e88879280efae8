"""Checkpoints of our own runs (``RUN_DIR/checkpoints/last.ckpt``): written atomically, read
weights-only, and the network they hold. They are for ``--resume`` and export only, never a
release format (``--init`` does not accept them).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from aqsep.audio import write_failure
from aqsep.config import ModelConfig
from aqsep.errors import ModelError, OutputError
from aqsep.model import QuerySeparator

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"


def last_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file, then rename: a kill mid-write leaves the previous one."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        except BaseException as err:
            tmp.unlink(missing_ok=True)
            if isinstance(err, OSError):  # a full disk, most often
                raise OutputError(write_failure(path, err)) from None
            raise


_DISALLOWED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint's contents, loaded weights-only (no code of the file runs).

    Raises:
        ModelError: a damaged file, one that is not a checkpoint, or one holding objects other
            than tensors and plain values (a weights-only load refuses them; they are never loaded).
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch's words would advise an unsafe load
        found = _DISALLOWED_GLOBAL.search(str(err))
        if found is None:
            raise ModelError(f"{path}: not a readable checkpoint (truncated or damaged?)") from None
        raise ModelError(
            f"{path}: holds an object other than tensors and plain values ({found.group(1)}), "
            "which aqsep never loads: not a checkpoint of an aqsep run, or altered"
        ) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, TypeError) as err:
        reason = str(err).split(". ")[0] or type(err).__name__
        raise ModelError(
            f"{path}: not a readable checkpoint (truncated or damaged?): {reason}"
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ModelError(f"{path}: not a checkpoint of an aqsep training run (no state_dict)")
    return ckpt


def load_checkpoint_model(path: str | Path) -> tuple[QuerySeparator, dict[str, Any]]:
    """The network of a run's Lightning checkpoint (our own runs only) and the checkpoint's extras."""
    path = Path(path)
    if path.is_dir():
        path = last_checkpoint(path)
    if not path.is_file():
        raise ModelError(f"no checkpoint at {path}")
    ckpt = read_checkpoint(path)
    try:
        hparams = ckpt["hyper_parameters"]
        model = QuerySeparator(ModelConfig.from_dict(hparams["model_config"]))
        state = {
            k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")
        }
        model.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError, ValueError, OSError) as err:
        raise ModelError(f"{path} is not a checkpoint of an aqsep training run ({err})") from None
    extras = {
        "steps": int(ckpt.get("global_step", 0)),
        "wall_time": float(ckpt.get("aqsep_wall_time", 0.0)),
        "train_config": hparams.get("train_config", {}),
    }
    return model.eval(), extras
