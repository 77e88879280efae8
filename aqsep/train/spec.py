"""What a run trains on and with which settings (``RUN_DIR/run.json``), and what a resumed run
may change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from aqsep.config import TRAIN_PRESETS, ModelConfig, TrainConfig
from aqsep.config import preset as model_preset
from aqsep.data import DataSource
from aqsep.errors import AqsepError

RUN_FILE = "run.json"


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


class ResumeConflict(AqsepError):
    """Settings that define a run were given other values for its resumption."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        super().__init__(
            f"{', '.join(self.names)} cannot change when a run is resumed (see its {RUN_FILE}); "
            "start a new run, or fine-tune from its model"
        )
