"""What a run trains on and with which settings (``RUN_DIR/run.json``), and what a resumed run
may change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from aqsep.config import TRAIN_PRESETS, ModelConfig, TrainConfig
from aqsep.config import preset as model_preset
from aqsep.data import DataSource
from aqsep.data.stems import LEVELS
from aqsep.errors import AqsepError, SettingError

RUN_FILE = "run.json"


#: The settings that define a run, by name (:meth:`RunSpec.setting`): a resumed run keeps them
#: (giving one again with its value is fine). The one list of them: the command line checks its
#: options against it through :meth:`RunSpec.resumed`.
FIXED_ON_RESUME = (
    "musdb",
    "is_wav",
    "preset",
    "level",
    "init",
    "init_separator",
    "batch_size",
    "lr",
    "seed",
    "lambda_latent",
    "latent_updates_query",
    "latent_fraction",
    "remix_prob",
    "lowpass_prob",
    "freeze_pretrained",
    "conditioning_lr_scale",
    "channels",
    "kernel_size",
    "latent_dim",
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


def parse_sources(
    data: str | Path | Sequence[str | Path], *, musdb: bool = False, is_wav: bool = False
) -> tuple[DataSource, ...]:
    """Data sets given as ``[KIND:]PATH[@WEIGHT]`` (:meth:`DataSource.parse`), one or several."""
    given = [data] if isinstance(data, str | Path) else list(data)
    return tuple(DataSource.parse(str(d), musdb=musdb, is_wav=is_wav) for d in given)


@dataclass(frozen=True)
class RunSpec:
    """What a run trains on and with which settings (``RUN_DIR/run.json``): its data sets,
    parsed once, and its model and training configs, checked when made."""

    sources: tuple[DataSource, ...]
    musdb: bool = False
    is_wav: bool = False
    level: str = "coarse"
    preset: str = "cpu"
    model_config: ModelConfig = field(default_factory=lambda: model_preset("cpu"))
    train_config: TrainConfig = field(default_factory=lambda: TRAIN_PRESETS["cpu"])
    init: str | None = None
    init_separator: str | None = None  # "spleeter": the separator starts from Spleeter 2-stems
    preload: bool = False

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise SettingError(f"level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        if self.init_separator is not None and (
            self.init_separator != "spleeter" or not self.model_config.pretrained
        ):
            raise SettingError(
                f"init_separator {self.init_separator!r}: a separator starts from Spleeter "
                "2-stems ('spleeter') only, and only a pretrained one: use the spleeter preset"
            )

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
        """A spec from a preset name, with training settings (sampling ones included) overridden
        by ``train_overrides``.

        Raises:
            TrainSettingError: an override out of its range.
        """
        if preset not in TRAIN_PRESETS:
            raise AqsepError(f"unknown preset {preset!r}; choose one of {sorted(TRAIN_PRESETS)}")
        train_config = TRAIN_PRESETS[preset].with_settings(**(train_overrides or {}))
        musdb, is_wav = bool(kwargs.get("musdb")), bool(kwargs.get("is_wav"))
        if is_wav and not musdb:
            raise SettingError("is_wav (MUSDB18-HQ's layout) only applies to MUSDB18 data (musdb)")
        # each data set with its kind and an absolute path: the run (and the model's metadata,
        # which evaluation checks for training tracks) means the same folders from anywhere
        sources = tuple(
            replace(s, path=str(Path(s.path).resolve()))
            for s in parse_sources(data, musdb=musdb, is_wav=is_wav)
        )
        return cls(
            sources=sources,
            preset=preset,
            model_config=model_config or model_preset(preset),
            train_config=train_config,
            **kwargs,
        )

    @property
    def data_label(self) -> str:
        return ", ".join(str(s) for s in self.sources)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``run.json``: each data set as ``KIND:PATH[@WEIGHT]`` (one string for one
        data set), the configs as their dicts."""
        data = [str(s) for s in self.sources]
        return {
            "data": data[0] if len(data) == 1 else data,
            "musdb": self.musdb,
            "is_wav": self.is_wav,
            "level": self.level,
            "preset": self.preset,
            "model": self.model_config.to_dict(),
            "train": self.train_config.to_dict(),
            "init": self.init,
            "init_separator": self.init_separator,
            "preload": self.preload,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunSpec:
        """Rebuild from :meth:`to_dict`'s output (or an older run's, whose training settings were
        one flat dict)."""
        values = dict(values)
        musdb, is_wav = bool(values.get("musdb", False)), bool(values.get("is_wav", False))
        sources = parse_sources(values.pop("data"), musdb=musdb, is_wav=is_wav)
        model = ModelConfig.from_dict(values.pop("model", model_preset("cpu").to_dict()))
        train = TrainConfig.from_dict(values.pop("train", TRAIN_PRESETS["cpu"].to_dict()))
        return cls(sources=sources, model_config=model, train_config=train, **values)

    def save(self, run_dir: Path) -> None:
        tmp = run_dir / f".{RUN_FILE}.tmp"
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, run_dir / RUN_FILE)

    @classmethod
    def load(cls, run_dir: str | Path) -> RunSpec:
        path = Path(run_dir) / RUN_FILE
        if not path.is_file():
            raise AqsepError(f"{run_dir} is not a training run folder (no {RUN_FILE})")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as err:
            raise AqsepError(
                f"{path} is damaged ({err}); start a new run in another folder"
            ) from None

    def setting(self, name: str) -> Any:
        """One setting of the run by name: the spec's own, a training setting (sampling ones
        included), or one of the separator's sizes (``channels``, ``kernel_size``,
        ``latent_dim``)."""
        mc = self.model_config
        sizes = {
            "channels": lambda: tuple(mc.separator.channels),
            "kernel_size": lambda: getattr(mc.separator, "kernel_size", None),
            "latent_dim": lambda: mc.query.latent_dim,
        }
        if name in sizes:
            return sizes[name]()
        if name in {f.name for f in fields(self)}:
            return getattr(self, name)
        return self.train_config.setting(name)

    def defining(self) -> dict[str, Any]:
        """The settings that define the run (:data:`FIXED_ON_RESUME`), by name."""
        return {name: self.setting(name) for name in FIXED_ON_RESUME}

    def resumed(
        self,
        *,
        data: str | Sequence[str] | None = None,
        preload: bool | None = None,
        **settings: Any,
    ) -> RunSpec:
        """This run as it continues: ``settings`` (None = not given) may repeat the defining ones
        (:data:`FIXED_ON_RESUME`) and change those of :data:`RESUMABLE`; ``data`` may point at the
        same data sets in another place.

        Raises:
            ResumeConflict: a defining setting differs from the run's.
            TrainSettingError: a changed setting out of its range.
        """
        unknown = sorted(set(settings) - set(FIXED_ON_RESUME) - set(RESUMABLE))
        if unknown:
            raise ValueError(f"unknown run settings {unknown}")
        conflicts = [
            k
            for k, v in settings.items()
            if k in FIXED_ON_RESUME and v is not None and v != self.setting(k)
        ]
        if conflicts:
            raise ResumeConflict(conflicts)
        changed = {k: v for k, v in settings.items() if k in RESUMABLE and v is not None}
        sources = (
            parse_sources(data, musdb=self.musdb, is_wav=self.is_wav) if data else self.sources
        )
        return replace(
            self,
            sources=sources,
            preload=self.preload if preload is None else preload,
            train_config=self.train_config.with_settings(**changed),
        )


class ResumeConflict(AqsepError):
    """Settings that define a run were given other values for its resumption."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        super().__init__(
            f"{', '.join(self.names)} cannot change when a run is resumed (see its {RUN_FILE}); "
            "start a new run, or fine-tune from its model"
        )
