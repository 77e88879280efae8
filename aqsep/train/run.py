"""A training run: checks before anything is written, the starting weights, the Lightning
trainer, and the export at the end.

A run folder (``RUN_DIR``) holds ``run.json`` (what was trained on, with which settings),
``checkpoints/last.ckpt`` (Lightning checkpoints of our own runs: ``--resume`` reads them; they are
never a release format and ``--init`` does not accept them), ``logs/version_N/metrics.csv`` (every
loss term; one version per start or resume, so rows of steps re-run after a resume appear twice)
and, at the end, the released model (``RUN_DIR/model`` unless told otherwise).
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger

from aqsep.errors import AqsepError, ModelError
from aqsep.model import QuerySeparator
from aqsep.pretrained import SpleeterSeparator
from aqsep.release import check_model_destination, load_model
from aqsep.train.checkpoints import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    AtomicCheckpointIO,
    last_checkpoint,
    read_checkpoint,
)
from aqsep.train.data import ExcerptData, excerpt_samples, train_and_valid
from aqsep.train.export import export_from_module
from aqsep.train.module import QueryTraining
from aqsep.train.spec import RUN_FILE, RunSpec

LOG_DIR = "logs"
DEFAULT_EXPORT = "model"


class RunExists(AqsepError):
    """A new run was asked for in a folder that already holds one."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    wall_time: float
    model_dir: Path | None  # the exported model (rank 0 only)
    metrics: dict[str, float]


_QUIET_WARNINGS = (
    r".*does not have many workers.*",
    r".*exists and is not empty.*",
    r".*resuming from a checkpoint that ended before the epoch ended.*",
    r".*`training_step` returned `None`.*",
    r".*smaller than the logging interval.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # raised inside Lightning 2.6 itself
)


def _restores_global_rng(fn: Callable[..., TrainResult]) -> Callable[..., TrainResult]:
    """Run ``fn`` on a fork of torch's global random generators: training seeds and draws from
    them, and the caller gets its own state back afterwards."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> TrainResult:
        with torch.random.fork_rng():
            return fn(*args, **kwargs)

    return wrapper


def _initialise(model: QuerySeparator, spec: RunSpec) -> None:
    """The starting weights of a new run: ``spec.init``'s (all of them; or, for a pretrained
    separator, the Query-net of a model of the other kind), then Spleeter's U-Nets with
    ``spec.init_separator``, the gate aimed by the init model's class means.

    Raises:
        ModelError: the init model does not fit this run's architecture.
    """
    config = model.config
    released = load_model(spec.init) if spec.init else None
    if released is not None:
        theirs = released.model.config
        if theirs == config:
            model.load_state_dict(released.model.state_dict(), strict=True)
        elif config.pretrained and theirs.query == config.query and theirs.audio == config.audio:
            model.query_net.load_state_dict(released.model.query_net.state_dict(), strict=True)
        else:
            raise ModelError(
                f"the model to fine-tune from, {spec.init}, has another architecture than this run's"
            )
    if spec.init_separator is None:
        return
    # RunSpec allows "spleeter" alone, with a pretrained separator
    assert isinstance(model.separator, SpleeterSeparator), (
        "init_separator without Spleeter's layout"
    )
    from aqsep.spleeter_import import init_from_spleeter

    init_from_spleeter(model.separator)
    if released is not None:
        names = released.classes
        others = [n for n in ("drums", "bass", "other") if n in names]
        if "vocals" in names and others:
            model.separator.aim_gate(
                torch.from_numpy(released.class_latent("vocals")),
                torch.from_numpy(np.stack([released.class_latent(n) for n in others])),
            )


@_restores_global_rng
def train(
    spec: RunSpec,
    run_dir: str | Path,
    *,
    resume: bool = False,
    export_dir: str | Path | None = None,
    accelerator: str = "auto",
    devices: int | None = None,
    num_nodes: int | None = None,
    progress: bool = True,
    log_every: int = 10,
) -> TrainResult:
    """Train (or, with ``resume``, continue) the run in ``run_dir``, then export the model.

    Multi-process training: start it under ``torchrun`` (DDP; gloo on CPU, NCCL on GPUs);
    ``devices`` and ``num_nodes`` default to what ``torchrun`` set up.

    Raises:
        AqsepError: the run folder does not fit the request (see messages), bad data or model.
    """
    run_dir = Path(run_dir)
    ckpt = last_checkpoint(run_dir)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    devices = devices or local_world
    num_nodes = num_nodes or max(1, world // local_world)
    rank = _process_rank(devices)
    _check_accelerator(accelerator)
    model_dir = Path(export_dir) if export_dir else run_dir / DEFAULT_EXPORT
    _check_outside_data(spec, {"run folder": run_dir, "model folder": model_dir})
    if resume:
        if not ckpt.is_file():
            never = (run_dir / RUN_FILE).is_file()
            raise AqsepError(
                f"nothing to resume in {run_dir}: no {CHECKPOINT_DIR}/{LAST_CHECKPOINT} yet"
                + ("; the run stopped before its first checkpoint: start it anew" if never else "")
            )
        read_checkpoint(ckpt)  # a damaged file fails here, in words, not inside Lightning
    elif rank == 0 and ckpt.is_file():  # a folder whose run never reached a checkpoint is reused
        raise RunExists(
            f"{run_dir} already holds a training run: resume it, or start the new run in another folder"
        )
    if rank == 0:
        check_model_destination(model_dir)  # a bad destination fails now, not after training
    model_config, tc = spec.model_config, spec.train_config
    on_cpu = accelerator == "cpu" or (
        accelerator == "auto"
        and not torch.cuda.is_available()
        and not torch.backends.mps.is_available()
    )
    if on_cpu and tc.precision.startswith("16"):
        raise AqsepError(
            f"precision {tc.precision} needs a GPU (float16 autocast); on the CPU use "
            "bf16-mixed or 32"
        )

    train_tracks, valid_tracks = train_and_valid(spec)
    torch.manual_seed(tc.seed)  # the caller's generator state is restored by the decorator
    module = QueryTraining(model_config.to_dict(), tc.to_dict())
    if not resume:
        _initialise(module.model, spec)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            spec.save(run_dir)

    data = ExcerptData(train_tracks, valid_tracks, length=excerpt_samples(model_config), config=tc)
    strategy: Any = "auto"
    if devices * num_nodes > 1:
        from lightning.pytorch.strategies import DDPStrategy

        on_gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
        strategy = DDPStrategy(process_group_backend="nccl" if on_gpu else "gloo")
    callbacks: list[Any] = [
        ModelCheckpoint(
            dirpath=run_dir / CHECKPOINT_DIR,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=tc.checkpoint_every,
            save_on_train_epoch_end=False,
        ),
    ]
    if progress:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    lightning_logger = logging.getLogger("lightning.pytorch")
    old_level = lightning_logger.level
    if not progress:
        lightning_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            trainer = L.Trainer(
                accelerator=accelerator,
                devices=devices,
                num_nodes=num_nodes,
                strategy=strategy,
                precision=tc.precision,  # type: ignore[arg-type]
                max_steps=tc.max_steps,
                max_epochs=-1,
                val_check_interval=tc.val_every,
                check_val_every_n_epoch=None,
                num_sanity_val_steps=0,
                log_every_n_steps=log_every,
                logger=CSVLogger(
                    run_dir,
                    name=LOG_DIR,
                    flush_logs_every_n_steps=max(1, min(50, tc.checkpoint_every)),
                ),
                callbacks=callbacks,
                plugins=[AtomicCheckpointIO()],
                use_distributed_sampler=False,
                enable_progress_bar=progress,
                enable_model_summary=progress,
                default_root_dir=run_dir,
            )
            trainer.fit(
                module, datamodule=data, ckpt_path=ckpt if resume else None, weights_only=True
            )
            trainer.save_checkpoint(ckpt, weights_only=False)
    finally:
        lightning_logger.setLevel(old_level)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if not trainer.is_global_zero:
        return TrainResult(run_dir, trainer.global_step, module.wall_time(), None, metrics)
    export_from_module(
        module.model,
        spec,
        model_dir,
        steps=trainer.global_step,
        wall_time=module.wall_time(),
        metrics=metrics,
    )
    return TrainResult(run_dir, trainer.global_step, module.wall_time(), model_dir, metrics)


def _process_rank(devices: int) -> int:
    """This process's global rank: ``torchrun`` sets ``RANK``; Lightning's own launcher gives the
    processes it starts ``NODE_RANK`` and ``LOCAL_RANK`` only, and its first process neither."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    return int(os.environ.get("NODE_RANK", "0")) * devices + int(os.environ.get("LOCAL_RANK", "0"))


def _check_accelerator(accelerator: str) -> None:
    """A GPU asked for where PyTorch sees none is refused before anything is written."""
    if accelerator not in ("gpu", "cuda") or torch.cuda.is_available():
        return
    if accelerator == "gpu" and torch.backends.mps.is_available():
        return
    raise AqsepError(
        f"accelerator {accelerator!r}: PyTorch sees no GPU on this machine (no CUDA device"
        f"{'' if accelerator == 'cuda' else ' and no Apple MPS'}); train on the CPU ('cpu' or "
        "'auto'), or install a build of PyTorch for the GPU"
    )


def _check_outside_data(spec: RunSpec, folders: dict[str, Path]) -> None:
    """Training writes nothing inside a data set it reads (its files would become data)."""
    for source in spec.sources:
        data = Path(source.path).resolve()
        for what, folder in folders.items():
            where = folder.resolve()
            if where == data or data in where.parents:
                raise AqsepError(
                    f"the {what} {folder} is inside the data set {source.path}: what training "
                    "writes there would be read as data by later runs; choose a folder outside it"
                )
