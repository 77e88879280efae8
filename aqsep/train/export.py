"""Export: a released model from a run's network, with the class latents of its training data
and the run's facts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from aqsep.config import TrainConfig
from aqsep.errors import AqsepError, DataError, ModelError
from aqsep.model import QuerySeparator
from aqsep.release import load_model, save_model
from aqsep.train.checkpoints import load_checkpoint_model
from aqsep.train.classes import class_latents, weighted_class_latents
from aqsep.train.data import open_data
from aqsep.train.spec import RUN_FILE, RunSpec, parse_sources


def export_from_module(
    model: QuerySeparator,
    spec: RunSpec,
    out_dir: str | Path,
    *,
    steps: int,
    wall_time: float,
    metrics: dict[str, float] | None = None,
    max_windows: int | None = 2000,
    classes_from: str | Path | None = None,
) -> Path:
    """Release ``model`` with the class latents of ``spec``'s training data and the run's facts.

    With ``classes_from`` (a released model whose Query-net has the very weights of ``model``'s,
    as a run with ``freeze_query`` keeps them), that model's class latents are taken instead of
    being computed again: the same encoder gives the same means.
    """
    tc = spec.train_config
    if classes_from is not None:
        source = load_model(classes_from)
        theirs, ours = source.model.query_net.state_dict(), model.query_net.state_dict()
        if theirs.keys() != ours.keys() or not all(
            torch.equal(theirs[k].cpu(), ours[k].cpu()) for k in ours
        ):
            raise ModelError(
                f"--classes-from {classes_from}: its Query-net differs from this model's, so its "
                "class means do not apply"
            )
        metadata = _export_metadata(spec, steps, wall_time, metrics)
        metadata["class_latents"] = f"those of {classes_from} (the same, frozen Query-net)"
        return save_model(out_dir, model.cpu(), source.classes, metadata)
    groups = open_data(spec, "train", model.config.audio.sample_rate, level="stems")
    if not any(groups):
        raise DataError(f"no training tracks in {spec.data_label} to compute class latents from")
    classes = weighted_class_latents(
        [
            class_latents(
                model, g, silence_db=tc.sampling.silence_db, max_windows=max_windows, seed=tc.seed
            )
            for g in groups
        ],
        [s.weight for s in spec.sources],
    )
    if not classes:
        raise DataError(
            f"no class latent could be computed from {spec.data_label}: every track is shorter "
            f"than one excerpt ({model.config.audio.segment_seconds:.2f} s) or silent"
        )
    return save_model(
        out_dir, model.cpu(), classes, _export_metadata(spec, steps, wall_time, metrics)
    )


def _export_metadata(
    spec: RunSpec, steps: int, wall_time: float, metrics: dict[str, float] | None
) -> dict[str, Any]:
    tc = spec.train_config
    return {
        "steps": steps,
        "wall_time_s": round(wall_time, 1),
        "data": [str(s) for s in spec.sources],
        "musdb": spec.musdb,
        "level": spec.level,
        "preset": spec.preset,
        "seed": tc.seed,
        "init": spec.init,
        "init_separator": spec.init_separator,
        "train_config": tc.to_dict(),
        "metrics": {k: round(v, 4) for k, v in (metrics or {}).items() if k.startswith("val/")},
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def export_model(
    run_or_checkpoint: str | Path,
    out_dir: str | Path,
    data: str | Path | Sequence[str] | None = None,
    *,
    musdb: bool | None = None,
    is_wav: bool | None = None,
    max_windows: int | None = 2000,
    classes_from: str | Path | None = None,
) -> Path:
    """Export a released model from a run folder (its last checkpoint) or a checkpoint file.

    The class latents are computed on ``data`` (default: the run's own data, from ``run.json``).
    """
    source = Path(run_or_checkpoint)
    model, extras = load_checkpoint_model(source)
    run_dir = source if source.is_dir() else source.parent.parent
    if (run_dir / RUN_FILE).is_file():
        spec = RunSpec.load(run_dir)
    elif data is None:
        raise AqsepError(f"{source} has no {RUN_FILE} beside it: pass the training data folder")
    else:
        train = TrainConfig.from_dict(extras["train_config"])
        spec = RunSpec(sources=(), model_config=model.config, train_config=train)
    spec = replace(
        spec,
        musdb=spec.musdb if musdb is None else musdb,
        is_wav=spec.is_wav if is_wav is None else is_wav,
    )
    if data is not None:
        spec = replace(spec, sources=parse_sources(data, musdb=spec.musdb, is_wav=spec.is_wav))
    return export_from_module(
        model,
        spec,
        out_dir,
        steps=extras["steps"],
        wall_time=extras["wall_time"],
        max_windows=max_windows,
        classes_from=classes_from,
    )
