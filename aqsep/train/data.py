"""The data of a run: its tracks opened from its data sets, and the Lightning data module of
excerpts indexed by global sample index (training) and of a fixed, seeded validation set.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace

import lightning as L
import torch
from torch.utils.data import DataLoader

from aqsep.config import ModelConfig, TrainConfig
from aqsep.data.sampling import (
    TRAIN_STREAM,
    VALID_STREAM,
    ExcerptDataset,
    StepBatchSampler,
    TrackPool,
)
from aqsep.data.stems import Track
from aqsep.errors import DataError
from aqsep.train.spec import RunSpec


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
        self.sampling = config.sampling

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


def open_data(
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


def train_and_valid(spec: RunSpec) -> tuple[TrackPool, TrackPool]:
    """The training and validation pools of the run's data sets, each set drawn by its weight;
    validation takes other excerpts of the training tracks where the data has no valid split.

    Raises:
        DataError: a data set without training tracks, or no track as long as one excerpt.
    """
    sr = spec.model_config.separator_audio.sample_rate
    weights = [s.weight for s in spec.sources]
    train_groups = open_data(spec, "train", sr)
    for source, group in zip(spec.sources, train_groups, strict=True):
        if not group:
            raise DataError(f"no training tracks in {source.path}")
    segment = excerpt_samples(spec.model_config)
    if all(t.length < segment for group in train_groups for t in group):
        raise DataError(
            f"every training track of {spec.data_label} is shorter than one training excerpt "
            f"({segment / sr:.2f} s): nothing to learn from"
        )
    valid_groups = open_data(spec, "valid", sr)
    if not any(valid_groups):
        warnings.warn(
            f"{spec.data_label} has no validation tracks: validating on other excerpts of the "
            "training tracks",
            stacklevel=3,
        )
        valid_groups = train_groups
    return TrackPool(train_groups, weights), TrackPool(valid_groups, weights)
