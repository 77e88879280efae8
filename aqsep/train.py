"""Training: the cVAE with latent regressor as a Lightning module, and export of a released model.

Loss (docs/paper.md section 5): ``L = lambda_R * L_R + lambda_KL * L_KL + lambda_lat * L_latent`` with

- ``L_R``: L1 between the target magnitude and ``S(M, z)``, ``z ~ Q(S_T)`` reparameterised;
- ``L_KL``: ``KL(Q(S_T) || N(0, I))``;
- ``L_latent``: L1 between ``z ~ N(0, I)`` and the mean of ``Q(S(M, z))``. With
  ``TrainConfig.latent_updates_query=False`` (BicycleGAN's choice, the default) this term
  re-encodes the estimate through the Query-net with *detached* parameters, so that its gradient
  reaches the separator (through the estimate) but not the Query-net. The term is computed on the
  first ``TrainConfig.latent_fraction`` of each batch's mixtures (all of them by default).

The datasets return waveforms; the STFT runs inside the module, on the training device.

A run folder (``RUN_DIR``) holds ``run.json`` (what was trained on, with which settings),
``checkpoints/last.ckpt`` (Lightning checkpoints of our own runs: ``--resume`` reads them; they are
never a release format and ``--init`` does not accept them), ``logs/version_N/metrics.csv`` (every
loss term; one version per start or resume, so rows of steps re-run after a resume appear twice)
and, at the end, the released model (``RUN_DIR/model`` unless told otherwise).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import re
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader

from aqsep.audio import write_failure
from aqsep.config import SILENCE_DB, TRAIN_PRESETS, ModelConfig, TrainConfig
from aqsep.config import preset as model_preset
from aqsep.data import DataSource
from aqsep.data.sampling import (
    TRAIN_STREAM,
    VALID_STREAM,
    ExcerptDataset,
    SamplingConfig,
    StepBatchSampler,
    TrackPool,
)
from aqsep.data.stems import Track
from aqsep.errors import AqsepError, DataError, ModelError, OutputError
from aqsep.fastforms import accelerate
from aqsep.losses import kl_loss, latent_loss, reconstruction_loss
from aqsep.model import Posterior, QuerySeparator
from aqsep.pretrained import SpleeterSeparator
from aqsep.query import LatentMeans, encode_frozen
from aqsep.release import ClassLatent, check_model_destination, load_model, save_model
from aqsep.transforms import istft, stft

RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
LOG_DIR = "logs"
DEFAULT_EXPORT = "model"


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


def latent_batch(batch: int, fraction: float) -> int:
    """Mixtures of a batch of ``batch`` that take the L_latent path: ``fraction`` of them, at least
    one."""
    if not 0 < fraction <= 1:
        raise ValueError(f"latent_fraction must be in (0, 1], got {fraction}")
    return max(1, round(fraction * batch))


def training_losses(
    model: QuerySeparator,
    mixture: torch.Tensor,
    target: torch.Tensor,
    config: TrainConfig,
    *,
    query: torch.Tensor | None = None,
    requery: Callable[[torch.Tensor], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The three loss terms and their weighted sum.

    Args:
        mixture, target: linear magnitudes on the separator's front-end, ``(batch, bins, frames)``
            (``(batch, channels, bins, frames)`` for a multichannel separator).
        query: the target's magnitude on the Query-net's front-end (default: ``target``, where
            the two front-ends are one).
        requery: an estimate's magnitude -> its magnitude on the Query-net's front-end, for
            L_latent's re-encoding (default: the identity).
    Returns:
        ``{"loss", "rec", "kl", "latent"}`` scalars (``latent`` is 0 when ``lambda_latent`` is 0).
    """
    requery = requery or (lambda m: m)
    posterior = model.encode(target if query is None else query)
    z = posterior.sample(generator)
    if config.lambda_latent > 0:
        batch = mixture.shape[0]
        n_prior = latent_batch(batch, config.latent_fraction)
        shape = (n_prior, z.shape[-1])
        z_prior = torch.randn(shape, generator=generator, device=z.device, dtype=z.dtype)
        # both separator passes in one batch: S(M, z ~ Q(S_T)) and S(M', z ~ N(0, I)) on the
        # first n_prior mixtures M'
        estimates = model(torch.cat([mixture, mixture[:n_prior]]), torch.cat([z, z_prior]))
        estimate, estimate_prior = estimates.split([batch, n_prior])
        encode = model.encode if config.latent_updates_query else lambda m: encode_frozen(model, m)
        latent = latent_loss(z_prior.float(), encode(requery(estimate_prior)).mu.float())
    else:
        estimate = model(mixture, z)
        latent = torch.zeros((), device=mixture.device)
    rec = reconstruction_loss(estimate.float(), target.float())
    kl = kl_loss(Posterior(posterior.mu.float(), posterior.logvar.float()))
    lambda_kl = 0.0 if config.freeze_query else config.lambda_kl  # only Q's parameters feel it
    loss = config.lambda_rec * rec + lambda_kl * kl + config.lambda_latent * latent
    return {"loss": loss, "rec": rec, "kl": kl, "latent": latent}


def is_conditioning(name: str) -> bool:
    """A parameter a pretrained separator adds to Spleeter's layers (z taps, FiLM maps, gate)."""
    return name.startswith("separator.") and any(
        part in name for part in ("z_taps", "films.", "gate.")
    )


# ---------------------------------------------------------------------------------------------
# Lightning module and data
# ---------------------------------------------------------------------------------------------


class QueryTraining(L.LightningModule):
    """The training engine: STFT on device, losses, Adam with step decay, SDR validation."""

    def __init__(self, model_config: dict[str, Any], train_config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model_config = ModelConfig.from_dict(model_config)
        self.train_config = TrainConfig.from_dict(train_config)
        # the exact fast layers (the same parameters and keys; tests/test_model.py)
        self.model = accelerate(QuerySeparator(self.model_config))
        if self.train_config.freeze_query:
            self.model.query_net.requires_grad_(False)
        if self.train_config.freeze_pretrained:
            for name, p in self.model.separator.named_parameters():
                p.requires_grad_(is_conditioning(f"separator.{name}"))
        self.wall_time_before = 0.0  # seconds trained before this process (resumed runs)
        self._started: float | None = None

    # -- helpers
    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` -> complex ``(batch, bins, frames)`` on the separator's front-end,
        always in float32; ``(batch, channels, bins, frames)`` for a multichannel separator (the
        mono excerpt on every channel)."""
        audio = self.model_config.separator_audio
        with torch.autocast(wave.device.type, enabled=False):
            spec = stft(wave.float(), audio.n_fft, audio.hop_length)
        channels = self.model_config.separator_channels
        return spec if channels == 1 else spec[:, None].expand(-1, channels, -1, -1)

    def query_magnitude(self, wave: torch.Tensor) -> torch.Tensor | None:
        """The Query-net's input magnitude ``(batch, bins, frames)`` of an excerpt at the
        separator's rate, or None where the two front-ends are one.

        The excerpt stays at its rate: an STFT whose window and hop last as many seconds as the
        Query-net's gives the same bins, ``ratio`` times as large (``ratio`` = the rate's ratio).
        """
        mc = self.model_config
        if not mc.pretrained:
            return None
        qa, sa = mc.audio, mc.separator_audio
        ratio = sa.sample_rate / qa.sample_rate
        n_fft, hop = round(qa.n_fft * ratio), round(qa.hop_length * ratio)
        with torch.autocast(wave.device.type, enabled=False):
            spec = stft(wave.float(), n_fft, hop)[:, : qa.n_fft // 2 + 1]
        return spec.abs() / ratio

    def requery(
        self, mix_spec: torch.Tensor, length: int
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """An estimate's magnitude -> its Query-net input (the mixture's phase, the channels'
        mean, back to a waveform, :meth:`query_magnitude`); the identity for one front-end."""
        mc = self.model_config
        if not mc.pretrained:
            return lambda m: m
        sa = mc.separator_audio
        phase = mix_spec / mix_spec.abs().clamp_min(1e-8)

        def convert(magnitude: torch.Tensor) -> torch.Tensor:
            spec = (magnitude * phase[: magnitude.shape[0]]).mean(dim=1)
            wave = istft(spec, sa.n_fft, sa.hop_length, length)
            query = self.query_magnitude(wave)
            assert query is not None
            return query

        return convert

    def wall_time(self) -> float:
        running = 0.0 if self._started is None else time.monotonic() - self._started
        return self.wall_time_before + running

    # -- training
    def on_train_start(self) -> None:
        self._started = time.monotonic()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.train_config.freeze_query:
            self.model.query_net.eval()
        mix_spec = self.spectrogram(batch["mixture"])
        mixture = mix_spec.abs()
        target = self.spectrogram(batch["target"]).abs()
        losses = training_losses(
            self.model,
            mixture,
            target,
            self.train_config,
            query=self.query_magnitude(batch["target"]),
            requery=self.requery(mix_spec, batch["mixture"].shape[-1]),
        )
        size = mixture.shape[0]
        self.log("train/loss", losses["loss"].detach(), prog_bar=True, batch_size=size)
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in losses.items() if k != "loss"}, batch_size=size
        )
        self.log("train/first_excerpt", batch["index"][0].double(), batch_size=size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=size)  # type: ignore[union-attr]
        return losses["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        import fast_bss_eval

        audio = self.model_config.separator_audio
        length = batch["mixture"].shape[-1]
        mix_spec = self.spectrogram(batch["mixture"])
        mixture, target = mix_spec.abs(), self.spectrogram(batch["target"]).abs()
        query = self.query_magnitude(batch["target"])
        posterior = self.model.encode(target if query is None else query)
        mask = self.model.mask(mixture, posterior.mu).float()
        gen = torch.Generator(device="cpu").manual_seed(int(batch["index"][0]))
        z = torch.randn(posterior.mu.shape, generator=gen).to(mixture.device)
        requery = self.requery(mix_spec, length)
        reencoded = self.model.encode(requery(self.model(mixture, z))).mu.float()
        rec = reconstruction_loss(mask * mixture, target)
        kl = kl_loss(Posterior(posterior.mu.float(), posterior.logvar.float()))
        latent = latent_loss(z, reencoded)
        tc = self.train_config
        loss = tc.lambda_rec * rec + tc.lambda_kl * kl + tc.lambda_latent * latent
        with torch.autocast(mixture.device.type, enabled=False):
            estimate = istft(mask * mix_spec, audio.n_fft, audio.hop_length, length)
            if estimate.dim() == 3:  # (batch, channels, samples) of a multichannel separator
                estimate = estimate.mean(dim=1)
            reference = batch["target"].double()[:, None]
            sdr = fast_bss_eval.sdr(reference, estimate.double()[:, None], clamp_db=100)[:, 0]
            sdr_mix = fast_bss_eval.sdr(
                reference, batch["mixture"].double()[:, None], clamp_db=100
            )[:, 0]
        size = mixture.shape[0]
        values = {
            "loss": loss,
            "rec": rec,
            "kl": kl,
            "latent": latent,
            "sdr": torch.nan_to_num(sdr).mean(),
            "sdr_mixture": torch.nan_to_num(sdr_mix).mean(),
        }
        self.log_dict(
            {f"val/{k}": v.float() for k, v in values.items()}, batch_size=size, sync_dist=True
        )
        self.log(
            "val_sdr",
            values["sdr"].float(),
            batch_size=size,
            sync_dist=True,
            prog_bar=True,
            logger=False,
        )

    def configure_optimizers(self) -> Any:
        tc = self.train_config
        trained = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        conditioning = [p for n, p in trained if is_conditioning(n)]
        groups = [{"params": [p for n, p in trained if not is_conditioning(n)], "lr": tc.lr}]
        if conditioning:
            groups.append({"params": conditioning, "lr": tc.lr * tc.conditioning_lr_scale})
        optimizer = torch.optim.Adam(groups, lr=tc.lr, betas=(tc.betas[0], tc.betas[1]))
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=tc.lr_decay_every, gamma=tc.lr_decay_gamma
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["aqsep_wall_time"] = self.wall_time()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.wall_time_before = float(checkpoint.get("aqsep_wall_time", 0.0))


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # data workers only read and mix audio


class ExcerptData(L.LightningDataModule):
    """Training excerpts indexed by global sample index; a fixed, seeded validation set whose
    excerpts all have a non-silent rest (``SamplingConfig.require_rest``), so that the validation
    SDR measures separation."""

    def __init__(
        self,
        train: Sequence[Track] | TrackPool,
        valid: Sequence[Track] | TrackPool,
        *,
        length: int,
        config: TrainConfig,
    ) -> None:
        super().__init__()
        self.train_tracks, self.valid_tracks = train, valid
        self.length = length
        self.config = config
        self.sampling = SamplingConfig.from_train_config(config)

    def train_dataloader(self) -> DataLoader:
        trainer, tc = self.trainer, self.config
        assert trainer is not None
        world = trainer.world_size
        sampler = StepBatchSampler(
            tc.batch_size,
            tc.max_steps,
            start_step=lambda: (
                trainer.global_step
            ),  # read when iteration starts: restored on resume
            rank=trainer.global_rank,
            world_size=world,
        )
        size = (tc.max_steps + 1) * world * tc.batch_size
        dataset = ExcerptDataset(
            self.train_tracks,
            self.length,
            self.sampling,
            seed=tc.seed,
            size=size,
            stream=TRAIN_STREAM,
        )
        workers = tc.num_workers
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=_worker_init if workers > 0 else None,
        )

    def val_dataloader(self) -> DataLoader:
        trainer, tc = self.trainer, self.config
        assert trainer is not None
        dataset = ExcerptDataset(
            self.valid_tracks,
            self.length,
            replace(self.sampling, require_rest=True),
            seed=tc.seed,
            size=tc.valid_excerpts,
            stream=VALID_STREAM,
            cache=True,
        )
        shard = list(range(trainer.global_rank, tc.valid_excerpts, trainer.world_size))
        return DataLoader(dataset, batch_size=tc.batch_size, sampler=shard, num_workers=0)


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


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


@dataclass
class RunSpec:
    """What a run trains on and with which settings (``RUN_DIR/run.json``)."""

    data: str | list[str]  # one or more data sets, each ``[KIND:]PATH[@WEIGHT]`` (DataSource.parse)
    musdb: bool = False
    is_wav: bool = False
    level: str = "coarse"
    preset: str = "cpu"
    model: dict[str, Any] = field(default_factory=lambda: model_preset("cpu").to_dict())
    train: dict[str, Any] = field(default_factory=lambda: TRAIN_PRESETS["cpu"].to_dict())
    init: str | None = None
    init_separator: str | None = None  # "spleeter": the separator starts from Spleeter 2-stems
    preload: bool = False

    @classmethod
    def create(
        cls,
        data: str | Path | Sequence[str | Path],
        *,
        preset: str = "cpu",
        train_overrides: dict[str, Any] | None = None,
        model_config: ModelConfig | None = None,
        **kwargs: Any,
    ) -> RunSpec:
        """A spec from a preset name, with TrainConfig fields overridden by ``train_overrides``."""
        if preset not in TRAIN_PRESETS:
            raise AqsepError(f"unknown preset {preset!r}; choose one of {sorted(TRAIN_PRESETS)}")
        train_config = replace(TRAIN_PRESETS[preset], **(train_overrides or {}))
        model = (model_config or model_preset(preset)).to_dict()
        given = [data] if isinstance(data, (str, Path)) else list(data)
        musdb, is_wav = bool(kwargs.get("musdb")), bool(kwargs.get("is_wav"))
        # each data set with its kind and an absolute path: the run (and the model's metadata,
        # which evaluation checks for training tracks) means the same folders from anywhere
        items = [
            str(replace(parsed, path=str(Path(parsed.path).resolve())))
            for parsed in (DataSource.parse(str(d), musdb=musdb, is_wav=is_wav) for d in given)
        ]
        return cls(
            data=items[0] if len(items) == 1 else items,
            preset=preset,
            model=model,
            train=train_config.to_dict(),
            **kwargs,
        )

    @property
    def sources(self) -> list[DataSource]:
        items = [self.data] if isinstance(self.data, str) else self.data
        return [DataSource.parse(d, musdb=self.musdb, is_wav=self.is_wav) for d in items]

    @property
    def data_label(self) -> str:
        return ", ".join(str(s) for s in self.sources)

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.model)

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.train)

    def save(self, run_dir: Path) -> None:
        tmp = run_dir / f".{RUN_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, run_dir / RUN_FILE)

    @classmethod
    def load(cls, run_dir: str | Path) -> RunSpec:
        path = Path(run_dir) / RUN_FILE
        if not path.is_file():
            raise AqsepError(f"{run_dir} is not a training run folder (no {RUN_FILE})")
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as err:
            raise AqsepError(
                f"{path} is damaged ({err}); start a new run in another folder"
            ) from None

    def defining(self) -> dict[str, Any]:
        """The settings that define the run, by name: they cannot change when it is resumed."""
        tc, mc = self.train_config, self.model_config
        return {
            "musdb": self.musdb,
            "is_wav": self.is_wav,
            "preset": self.preset,
            "level": self.level,
            "init": self.init,
            "init_separator": self.init_separator,
            "batch_size": tc.batch_size,
            "lr": tc.lr,
            "seed": tc.seed,
            "lambda_latent": tc.lambda_latent,
            "latent_updates_query": tc.latent_updates_query,
            "latent_fraction": tc.latent_fraction,
            "remix_prob": tc.remix_prob,
            "lowpass_prob": tc.lowpass_prob,
            "freeze_pretrained": tc.freeze_pretrained,
            "conditioning_lr_scale": tc.conditioning_lr_scale,
            "channels": tuple(mc.separator.channels),
            "kernel_size": getattr(mc.separator, "kernel_size", None),
            "latent_dim": mc.query.latent_dim,
        }

    def resumed(
        self,
        *,
        data: str | list[str] | None = None,
        preload: bool | None = None,
        **settings: Any,
    ) -> RunSpec:
        """This run as it continues: ``settings`` (None = not given) may repeat the defining ones
        (:meth:`defining`) and change those of :data:`RESUMABLE`; ``data`` may point at the same
        data sets in another place.

        Raises:
            ResumeConflict: a defining setting differs from the run's.
        """
        defining = self.defining()
        unknown = sorted(set(settings) - set(defining) - set(RESUMABLE))
        if unknown:
            raise ValueError(f"unknown run settings {unknown}")
        conflicts = [
            k for k, v in settings.items() if k in defining and v is not None and v != defining[k]
        ]
        if conflicts:
            raise ResumeConflict(conflicts)
        train = dict(self.train)
        train.update({k: v for k, v in settings.items() if k in RESUMABLE and v is not None})
        return replace(
            self,
            data=data or self.data,
            preload=self.preload if preload is None else preload,
            train=train,
        )


#: TrainConfig fields that a resumed run may change: its length, how often it validates and
#: saves, and how it loads data.
RESUMABLE = (
    "max_steps",
    "val_every",
    "checkpoint_every",
    "valid_excerpts",
    "num_workers",
    "precision",
)


class RunExists(AqsepError):
    """A new run was asked for in a folder that already holds one."""


class ResumeConflict(AqsepError):
    """Settings that define a run were given other values for its resumption."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        super().__init__(
            f"{', '.join(self.names)} cannot change when a run is resumed (see its {RUN_FILE}); "
            "start a new run, or fine-tune from its model"
        )


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    wall_time: float
    model_dir: Path | None  # the exported model (rank 0 only)
    metrics: dict[str, float]


def last_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT


def _open_data(
    spec: RunSpec, split: str, sample_rate: int, level: str | None = None
) -> list[list[Track]]:
    """The tracks of ``split`` of each data set of the run, in the order of ``spec.sources``."""
    return [
        source.open(split, level=level or spec.level, sample_rate=sample_rate, preload=spec.preload)
        for source in spec.sources
    ]


def excerpt_samples(config: ModelConfig) -> int:
    """Samples of one training excerpt, at the separator's rate: the Query-net's window
    (``audio.segment_seconds``), on the separator's front-end where it has its own."""
    if not config.pretrained:
        return config.audio.segment_samples
    sa = config.separator_audio
    frames = round(config.audio.segment_seconds * sa.sample_rate / sa.hop_length)
    return frames * sa.hop_length


def _train_and_valid(spec: RunSpec) -> tuple[TrackPool, TrackPool]:
    sr = spec.model_config.separator_audio.sample_rate
    weights = [s.weight for s in spec.sources]
    train_groups = _open_data(spec, "train", sr)
    for source, group in zip(spec.sources, train_groups, strict=True):
        if not group:
            raise DataError(f"no training tracks in {source.path}")
    segment = excerpt_samples(spec.model_config)
    if all(t.length < segment for group in train_groups for t in group):
        raise DataError(
            f"every training track of {spec.data_label} is shorter than one training excerpt "
            f"({segment / sr:.2f} s): nothing to learn from"
        )
    valid_groups = _open_data(spec, "valid", sr)
    if not any(valid_groups):
        warnings.warn(
            f"{spec.data_label} has no validation tracks: validating on other excerpts of the "
            "training tracks",
            stacklevel=3,
        )
        valid_groups = train_groups
    return TrackPool(train_groups, weights), TrackPool(valid_groups, weights)


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
    if spec.init_separator != "spleeter" or not isinstance(model.separator, SpleeterSeparator):
        raise ModelError(f"--init-separator {spec.init_separator} needs the spleeter preset")
    from aqsep.spleeter_import import init_from_spleeter

    init_from_spleeter(model.separator)
    if released is not None:
        names = released.classes
        others = [n for n in ("drums", "bass", "other") if n in names]
        if "vocals" in names and others:
            model.separator.aim_gate(
                released.class_latent("vocals"),
                torch.stack([released.class_latent(n) for n in others]),
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

    train_tracks, valid_tracks = _train_and_valid(spec)
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


# ---------------------------------------------------------------------------------------------
# Export: released model with class mean latents
# ---------------------------------------------------------------------------------------------


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


@torch.no_grad()
def class_latents(
    model: QuerySeparator,
    tracks: list[Track],
    *,
    levels: tuple[str, ...] = ("coarse", "fine"),
    silence_db: float = SILENCE_DB,
    max_windows: int | None = 2000,
    batch_size: int = 32,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, ClassLatent]:
    """Mean of mu over the non-silent windows (``segment_samples`` long) of every stem, per class
    (:class:`aqsep.query.LatentMeans`, the path of every latent).

    ``tracks`` should be opened at level ``"stems"``: the stems of a track are summed by coarse
    label for the ``"coarse"`` classes and by fine label (where the data has one) for ``"fine"``.
    A fine class whose name is also a coarse class (e.g. ``bass``) keeps the coarse latent. At most
    ``max_windows`` windows per class are used, from tracks visited in a seeded random order.
    """
    model = model.eval().to(device)
    seg = model.config.audio.segment_samples
    means: LatentMeans[tuple[str, str]] = LatentMeans(
        model, device=device, batch_size=batch_size, silence_db=silence_db
    )

    def full(key: tuple[str, str]) -> bool:
        return max_windows is not None and means.count(key) >= max_windows

    order = np.random.default_rng(seed).permutation(len(tracks))
    block_windows = 16
    for t in order:
        track = tracks[int(t)]
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for k, stem in enumerate(track.stems):
            label = track.labels[stem]
            if "coarse" in levels:
                groups[("coarse", label.coarse)].append(k)
            if "fine" in levels and label.fine is not None:
                groups[("fine", label.fine)].append(k)
        if all(full(key) for key in groups):
            continue
        n_windows = track.length // seg
        for first in range(0, n_windows, block_windows):
            count = min(block_windows, n_windows - first)
            stems = track.read(first * seg, count * seg)
            for key, rows in groups.items():
                for window in stems[rows].sum(axis=0).reshape(count, seg):
                    if not full(key):
                        means.add(key, window)
    latents: dict[str, ClassLatent] = {}
    found = sorted(means.means().items(), key=lambda kv: kv[0][0] != "coarse")
    for (level, name), (mean, n) in found:
        if name in latents:  # a fine name that is also a coarse class keeps the coarse latent
            continue
        latents[name] = ClassLatent(latent=mean.tolist(), level=level, count=n)
    return latents


def weighted_class_latents(
    per_set: Sequence[dict[str, ClassLatent]], weights: Sequence[float]
) -> dict[str, ClassLatent]:
    """One mean latent per class over several data sets: each set's class mean weighed by the
    set's weight (its share of the training excerpts), over the sets that have the class.

    So a class that a small data set of real recordings shares with a large synthetic corpus
    (``vocals`` of MIR-1K and of the corpus) is not dominated by the larger set.
    """
    merged: dict[str, ClassLatent] = {}
    for name in dict.fromkeys(n for classes in per_set for n in classes):
        parts = [(c[name], w) for c, w in zip(per_set, weights, strict=True) if name in c]
        total = sum(w for _, w in parts)
        latent = sum(np.asarray(c.latent) * (w / total) for c, w in parts)
        merged[name] = ClassLatent(
            latent=[float(x) for x in np.asarray(latent)],
            level=parts[0][0].level,
            count=sum(c.count for c, _ in parts),
        )
    return merged


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
    groups = _open_data(spec, "train", model.config.audio.sample_rate, level="stems")
    if not any(groups):
        raise DataError(f"no training tracks in {spec.data_label} to compute class latents from")
    classes = weighted_class_latents(
        [
            class_latents(model, g, silence_db=tc.silence_db, max_windows=max_windows, seed=tc.seed)
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
    else:
        if data is None:
            raise AqsepError(f"{source} has no {RUN_FILE} beside it: pass the training data folder")
        spec = RunSpec(data="", model=model.config.to_dict(), train=extras["train_config"])
    if data is not None:
        spec = replace(spec, data=str(data) if isinstance(data, (str, Path)) else list(data))
    if musdb is not None:
        spec = replace(spec, musdb=musdb)
    if is_wav is not None:
        spec = replace(spec, is_wav=is_wav)
    return export_from_module(
        model,
        spec,
        out_dir,
        steps=extras["steps"],
        wall_time=extras["wall_time"],
        max_windows=max_windows,
        classes_from=classes_from,
    )
