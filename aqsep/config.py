"""Hyperparameters as plain, JSON-safe dataclasses, with the two named presets.

Every size of the network and its audio front-end comes from :class:`ModelConfig`; training
settings from :class:`TrainConfig`. Both round-trip through ``to_dict``/``from_dict`` so that a
released model stores them beside its weights (``config.json``).

Values tagged [default] in docs/paper.md fill the paper's gaps: see that file for each choice.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, TypeVar

from aqsep.errors import SettingError

T = TypeVar("T")

#: The silence rule's threshold (RMS, dBFS): a query window or a training target below it holds
#: nothing to look for (:mod:`aqsep.query` applies it to queries and class means).
SILENCE_DB = -50.0

UNET_DEPTH = 6  # stride-2 levels of the separator's U-Net: n_bins must divide by 2 ** UNET_DEPTH


# The largest sizes a config may ask for: far above any preset, and small enough that building
# the network is never an allocation of many gigabytes made before anything else is checked.
MAX_SAMPLE_RATE = 192_000
MAX_N_FFT = 2**16
MAX_SEGMENT_FRAMES = 2**14
MAX_WIDTH = 2048  # channels of a layer, the GRU's hidden size, the latent's dimension
MAX_KERNEL = 31


def _whole(owner: str, name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    """Refuse anything but an int from ``minimum`` to ``maximum`` (JSON ``"22050"``, ``22050.0``
    or ``true`` too)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner}.{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}.{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{owner}.{name} must be at most {maximum}, got {value}")


def _layers(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, tuple) or len(value) != UNET_DEPTH:
        raise ValueError(f"{owner}.{name} must list {UNET_DEPTH} layer widths, got {value!r}")
    for width in value:
        _whole(owner, name, width, 1, MAX_WIDTH)


def _odd_kernel(owner: str, value: Any) -> None:
    _whole(owner, "kernel_size", value, 1, MAX_KERNEL)
    if value % 2 == 0:
        raise ValueError(f"{owner}.kernel_size must be odd (centred padding), got {value}")


@dataclass(frozen=True)
class AudioConfig:
    """The STFT front-end shared by training, inference and evaluation."""

    sample_rate: int = 22050  # [inferred] poster spectrograms reach ~11 kHz
    n_fft: int = 1024
    hop_length: int = 256
    n_bins: int = 512  # the network sees bins 0..511; the Nyquist bin reuses bin 511's mask
    segment_frames: int = 256  # ~2.97 s at 22.05 kHz, the paper's excerpt length [inferred]

    def __post_init__(self) -> None:
        owner = "audio"
        _whole(owner, "sample_rate", self.sample_rate, 1000, MAX_SAMPLE_RATE)
        _whole(owner, "n_fft", self.n_fft, 2 * 2**UNET_DEPTH, MAX_N_FFT)
        _whole(owner, "hop_length", self.hop_length, 1)
        _whole(owner, "n_bins", self.n_bins, 2**UNET_DEPTH)
        _whole(owner, "segment_frames", self.segment_frames, 2, MAX_SEGMENT_FRAMES)
        if self.hop_length > self.n_fft:
            raise ValueError(
                f"audio.hop_length {self.hop_length} is longer than audio.n_fft {self.n_fft}: "
                "frames would skip samples"
            )
        if self.n_bins > self.n_fft // 2:
            raise ValueError(
                f"audio.n_bins must be at most n_fft // 2 = {self.n_fft // 2} (the bins below "
                f"Nyquist), got n_bins {self.n_bins} with n_fft {self.n_fft}"
            )
        if self.n_bins % 2**UNET_DEPTH:
            raise ValueError(
                f"audio.n_bins must be a multiple of {2**UNET_DEPTH} (the U-Net halves it "
                f"{UNET_DEPTH} times), got {self.n_bins}"
            )

    @property
    def segment_samples(self) -> int:
        """Samples of one training excerpt / query window: exactly ``segment_frames`` STFT frames."""
        return (self.segment_frames - 1) * self.hop_length

    @property
    def segment_seconds(self) -> float:
        return self.segment_samples / self.sample_rate


@dataclass(frozen=True)
class QueryNetConfig:
    """Query-net: 6 conv blocks, a bidirectional GRU, and linear maps to mu and log-variance."""

    channels: tuple[int, ...] = (32, 32, 64, 64, 128, 128)
    kernel_size: int = 3
    gru_hidden: int = 128  # per direction
    latent_dim: int = 128

    def __post_init__(self) -> None:
        _layers("query", "channels", self.channels)
        _odd_kernel("query", self.kernel_size)
        _whole("query", "gru_hidden", self.gru_hidden, 1, MAX_WIDTH)
        _whole("query", "latent_dim", self.latent_dim, 1, MAX_WIDTH)


@dataclass(frozen=True)
class SeparatorConfig:
    """U-Net separator in the style of Jansson et al. 2017, conditioned on z."""

    channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    kernel_size: int = 5
    dropout: float = 0.5
    dropout_layers: int = 3  # the first decoder blocks that use dropout

    def __post_init__(self) -> None:
        _layers("separator", "channels", self.channels)
        _odd_kernel("separator", self.kernel_size)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise ValueError(f"separator.dropout must be a number, got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"separator.dropout must be in [0, 1), got {self.dropout}")
        _whole("separator", "dropout_layers", self.dropout_layers, 0, UNET_DEPTH)


# Spleeter 2-stems' front-end: 44.1 kHz stereo, n_fft 4096, hop 1024, the first 1024 bins (up to
# 11 kHz), 512-frame patches (11.9 s)
SPLEETER_AUDIO = AudioConfig(
    sample_rate=44100, n_fft=4096, hop_length=1024, n_bins=1024, segment_frames=512
)


@dataclass(frozen=True)
class PretrainedSeparatorConfig:
    """The separator that starts from Spleeter 2-stems' U-Nets (:mod:`aqsep.pretrained`).

    It has a front-end of its own (``audio``: Spleeter's), stereo in and one mask per channel;
    the Query-net keeps the model's ``audio`` front-end, so that a Query-net and its class means
    carry over from a model of the other kind.
    """

    kind: str = "spleeter"
    audio: AudioConfig = SPLEETER_AUDIO
    channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    audio_channels: int = 2
    branches: int = 2  # 2: Spleeter's vocal and accompaniment networks; 1: the vocal one alone
    encoder_film: bool = True  # a z-driven affine after every encoder BatchNorm too
    dropout: float = 0.5
    # false: Spleeter's networks alone, without z (as the vocal stage of the cascade preset)
    conditioned: bool = True
    # a vocal stage's gate votes with this many class latents (aqsep.pretrained.ClassVoteGate)
    gate_classes: int = 0

    def __post_init__(self) -> None:
        owner = "separator"
        if self.kind != "spleeter":
            raise ValueError(f"separator.kind must be 'spleeter', got {self.kind!r}")
        if not isinstance(self.audio, AudioConfig):
            raise ValueError("separator.audio must be an object of audio settings")
        _layers(owner, "channels", self.channels)
        _whole(owner, "audio_channels", self.audio_channels, 1)
        if self.audio_channels > 8:
            raise ValueError(
                f"separator.audio_channels must be at most 8, got {self.audio_channels}"
            )
        if self.branches not in (1, 2):
            raise ValueError(f"separator.branches must be 1 or 2, got {self.branches!r}")
        if isinstance(self.gate_classes, bool) or not isinstance(self.gate_classes, int):
            raise ValueError(
                f"separator.gate_classes must be a whole number, got {self.gate_classes!r}"
            )
        if not 0 <= self.gate_classes <= 4096:
            raise ValueError(
                f"separator.gate_classes must be in [0, 4096], got {self.gate_classes}"
            )
        if not isinstance(self.conditioned, bool):
            raise ValueError(
                f"separator.conditioned must be true or false, got {self.conditioned!r}"
            )
        if not isinstance(self.encoder_film, bool):
            raise ValueError(
                f"separator.encoder_film must be true or false, got {self.encoder_film!r}"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise ValueError(f"separator.dropout must be a number, got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"separator.dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class ModelConfig:
    audio: AudioConfig = field(default_factory=AudioConfig)
    query: QueryNetConfig = field(default_factory=QueryNetConfig)
    separator: SeparatorConfig | PretrainedSeparatorConfig = field(default_factory=SeparatorConfig)
    # Spleeter 2-stems in front of the separator (the cascade preset): a gate on z takes its
    # vocals, or its accompaniment narrowed by the separator's mask (aqsep.model.QuerySeparator)
    vocal_stage: PretrainedSeparatorConfig | None = None

    def __post_init__(self) -> None:
        a = self.audio
        if a.n_bins != a.n_fft // 2:  # the Query-net (and the paper's U-Net) read every bin
            raise ValueError(
                f"audio.n_bins must be n_fft // 2 = {a.n_fft // 2} (the bins below Nyquist), "
                f"got n_bins {a.n_bins} with n_fft {a.n_fft}"
            )
        stage = self.vocal_stage
        if stage is not None:
            if not isinstance(stage, PretrainedSeparatorConfig) or stage.conditioned:
                raise ValueError("vocal_stage must be an unconditioned Spleeter separator")
            if stage.gate_classes < 2:
                raise ValueError(
                    "vocal_stage.gate_classes must be at least 2 (a vocal class and another)"
                )
            if self.pretrained:
                raise ValueError("vocal_stage needs the paper's U-Net as the separator")

    @property
    def pretrained(self) -> bool:
        """The separator is :class:`PretrainedSeparatorConfig`'s kind."""
        return isinstance(self.separator, PretrainedSeparatorConfig)

    @property
    def separator_audio(self) -> AudioConfig:
        """The separator's front-end: its own where it has one, else the Query-net's."""
        sep = self.separator
        return sep.audio if isinstance(sep, PretrainedSeparatorConfig) else self.audio

    @property
    def separator_channels(self) -> int:
        """Audio channels the separator reads and masks (1: a mono mix)."""
        sep = self.separator
        return sep.audio_channels if isinstance(sep, PretrainedSeparatorConfig) else 1

    @property
    def output_audio(self) -> AudioConfig:
        """The front-end whose STFT grid the masks are applied on and whose patch length the
        chunks take: the vocal stage's where there is one, else the separator's."""
        return self.vocal_stage.audio if self.vocal_stage is not None else self.separator_audio

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.vocal_stage is None:
            del data["vocal_stage"]  # the files of the models without one stay as they were
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_dict`'s output; raises ValueError naming the first bad value."""
        if not isinstance(data, dict):
            raise ValueError(f"the model config must be an object, got {_json_type(data)}")
        unknown = set(data) - {"audio", "query", "separator", "vocal_stage"}
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        stage = data.get("vocal_stage")
        if stage is not None:
            stage = _separator(stage)
            if not isinstance(stage, PretrainedSeparatorConfig):
                raise ValueError("vocal_stage must be a separator of kind 'spleeter'")
        return cls(
            audio=_build(AudioConfig, data.get("audio", {})),
            query=_build(QueryNetConfig, data.get("query", {})),
            separator=_separator(data.get("separator", {})),
            vocal_stage=stage,
        )


class TrainSettingError(SettingError):
    """A training setting out of its range: ``setting`` names the field of :class:`TrainConfig`
    (or of its :class:`SamplingConfig`), ``requirement`` says what it must be."""

    def __init__(self, setting: str, requirement: str) -> None:
        self.setting, self.requirement = setting, requirement
        super().__init__(f"training setting {setting} {requirement}")


def _number(
    name: str, value: Any, low: float, high: float, *, open_low: bool, open_high: bool
) -> None:
    """Refuse anything but a finite number in the interval from ``low`` to ``high``."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if numeric and math.isfinite(value):
        above = low < value if open_low else low <= value
        if above and (value < high if open_high else value <= high):
            return
    if high == math.inf:
        interval = f"{'> ' if open_low else '>= '}{low:g}"
    elif low == -math.inf:
        interval = f"{'< ' if open_high else '<= '}{high:g}"
    else:
        interval = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    what = "a finite number " if not numeric or not math.isfinite(value) else ""
    raise TrainSettingError(name, f"must be {what}{interval}, got {value!r}")


def _count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TrainSettingError(name, f"must be a whole number >= {minimum}, got {value!r}")


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TrainSettingError(name, f"must be true or false, got {value!r}")


_INF = math.inf

#: Lightning precisions that training accepts (aqsep.train.run refuses float16 on a CPU).
PRECISIONS = ("32", "bf16-mixed", "16-mixed")


@dataclass(frozen=True)
class SamplingConfig:
    """The paper's sampling strategy and its guards (:mod:`aqsep.data.sampling`)."""

    keep_prob: float = 0.5  # [paper] alpha ~ Bernoulli(0.5)
    gain_low: float = 0.25  # [paper] beta ~ Uniform(0.25, 1.25)
    gain_high: float = 1.25
    remix_prob: float = 0.0  # probability of drawing each stem from a random other track
    # bandwidth augmentation: with this probability every stem of an excerpt (so target, rest and
    # mixture alike) is low-passed at a cutoff drawn uniformly in [lowpass_low, lowpass_high] Hz
    lowpass_prob: float = 0.0
    lowpass_low: float = 4000.0
    lowpass_high: float = 11000.0
    silence_db: float = SILENCE_DB  # reject a target whose RMS (dBFS) is below this [default]
    relative_db: float = -60.0  # ... or that lies more than 60 dB below the mixture [default]
    require_rest: bool = False  # also reject an excerpt whose rest is silent (validation)
    max_tries: int = 200  # excerpts drawn before giving up on a (silent) data set

    def __post_init__(self) -> None:
        _number("keep_prob", self.keep_prob, 0, 1, open_low=True, open_high=False)
        _number("gain_low", self.gain_low, 0, _INF, open_low=False, open_high=True)
        _number("gain_high", self.gain_high, self.gain_low, _INF, open_low=False, open_high=True)
        _number("remix_prob", self.remix_prob, 0, 1, open_low=False, open_high=False)
        _number("lowpass_prob", self.lowpass_prob, 0, 1, open_low=False, open_high=False)
        _number("lowpass_low", self.lowpass_low, 0, _INF, open_low=True, open_high=True)
        _number(
            "lowpass_high",
            self.lowpass_high,
            self.lowpass_low,
            _INF,
            open_low=False,
            open_high=True,
        )
        _number("silence_db", self.silence_db, -_INF, 0, open_low=True, open_high=False)
        _number("relative_db", self.relative_db, -_INF, 0, open_low=True, open_high=False)
        _flag("require_rest", self.require_rest)
        _count("max_tries", self.max_tries, 1)


#: The names of :class:`SamplingConfig`'s settings (a flat :class:`TrainConfig` dict of older
#: runs held them beside the others).
SAMPLING_SETTINGS = tuple(f.name for f in fields(SamplingConfig))


@dataclass(frozen=True)
class TrainConfig:
    """Loss weights, optimiser and sampling settings (docs/paper.md sections 5 and 6), each
    checked when the config is made (:class:`TrainSettingError` names the first bad one)."""

    lambda_rec: float = 1.0
    lambda_kl: float = 0.01
    lambda_latent: float = 0.5
    latent_updates_query: bool = False  # BicycleGAN: L_latent updates the separator only
    # keep the Query-net as it was loaded (--init): its latent space and class means carry over,
    # and L_KL, which only the Query-net's parameters feel, is left out
    freeze_query: bool = False
    # learning-rate factor of the conditioning a pretrained separator adds to Spleeter's layers
    # (the z taps, the FiLM maps and the gate), which start at zero
    conditioning_lr_scale: float = 1.0
    # train the conditioning alone: the pretrained layers keep the weights they were imported with
    freeze_pretrained: bool = False
    # share of each batch's mixtures that also take the L_latent path (a separator pass with
    # z ~ N(0, I) and a re-encoding). 1 = every mixture. Less is faster (0.5: about 1.3x per step
    # for `cpu`) but was less stable in a small trial (docs/benchmarks.md), so it is opt-in.
    latent_fraction: float = 1.0
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    batch_size: int = 16
    max_steps: int = 200_000
    lr_decay_every: int = 50_000  # multiply the learning rate by lr_decay_gamma every N steps
    lr_decay_gamma: float = 0.5
    # how excerpts are drawn: the paper's keep probability and gains, remixing, low-passing, and
    # the silence rule of training targets
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    excerpts_per_epoch: int = 4000
    valid_excerpts: int = 64
    val_every: int = 1000
    checkpoint_every: int = 500
    num_workers: int = 2
    precision: str = "32"  # Lightning precision, one of PRECISIONS
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("lambda_rec", "lambda_kl", "lambda_latent"):
            _number(name, getattr(self, name), 0, _INF, open_low=False, open_high=True)
        for name in ("latent_updates_query", "freeze_query", "freeze_pretrained"):
            _flag(name, getattr(self, name))
        _number(
            "conditioning_lr_scale",
            self.conditioning_lr_scale,
            0,
            _INF,
            open_low=False,
            open_high=True,
        )
        _number("latent_fraction", self.latent_fraction, 0, 1, open_low=True, open_high=False)
        _number("lr", self.lr, 0, 1, open_low=True, open_high=True)
        if not isinstance(self.betas, tuple) or len(self.betas) != 2:
            raise TrainSettingError("betas", f"must be two numbers, got {self.betas!r}")
        for beta in self.betas:
            _number("betas", beta, 0, 1, open_low=False, open_high=True)
        for name in ("batch_size", "max_steps", "lr_decay_every", "excerpts_per_epoch"):
            _count(name, getattr(self, name), 1)
        _number("lr_decay_gamma", self.lr_decay_gamma, 0, 1, open_low=True, open_high=False)
        if not isinstance(self.sampling, SamplingConfig):
            raise TrainSettingError("sampling", f"must be a SamplingConfig, got {self.sampling!r}")
        for name in ("valid_excerpts", "val_every", "checkpoint_every"):
            _count(name, getattr(self, name), 1)
        _count("num_workers", self.num_workers, 0)
        if self.precision not in PRECISIONS:
            raise TrainSettingError(
                "precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        _count("seed", self.seed, 0)

    def with_settings(self, **settings: Any) -> TrainConfig:
        """This config with the settings given by name changed, those of :attr:`sampling`
        (``remix_prob``, ...) included.

        Raises:
            TrainSettingError: an unknown name, or a value out of its range.
        """
        own = {f.name for f in fields(self)} - {"sampling"}
        unknown = sorted(set(settings) - own - set(SAMPLING_SETTINGS))
        if unknown:
            raise TrainSettingError(unknown[0], "is not a training setting")
        sampling = {k: v for k, v in settings.items() if k in SAMPLING_SETTINGS}
        return replace(
            self,
            sampling=replace(self.sampling, **sampling),
            **{k: v for k, v in settings.items() if k in own},
        )

    def setting(self, name: str) -> Any:
        """A setting by name, of this config or of its :attr:`sampling`."""
        return getattr(self.sampling if name in SAMPLING_SETTINGS else self, name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict`'s output, or from the flat dict of older runs (the
        sampling settings beside the others)."""
        if not isinstance(data, dict):
            raise ValueError(f"TrainConfig must be an object, got {_json_type(data)}")
        values = {k: v for k, v in data.items() if k not in SAMPLING_SETTINGS}
        flat = {k: v for k, v in data.items() if k in SAMPLING_SETTINGS}
        nested = values.pop("sampling", {})
        sampling = _build(SamplingConfig, nested)
        return replace(_build(cls, values), sampling=replace(sampling, **flat))


def _json_type(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", str: "a string", list: "a list"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else repr(value))


def _separator(data: Any) -> SeparatorConfig | PretrainedSeparatorConfig:
    """A separator config by its ``kind`` (none: the paper's U-Net)."""
    if isinstance(data, dict) and "kind" in data:
        if data["kind"] != "spleeter":
            raise ValueError(f"unknown separator kind {data['kind']!r}; known: 'spleeter'")
        values = dict(data)
        values["audio"] = _build(AudioConfig, values.get("audio", {}))
        return _build(PretrainedSeparatorConfig, values)
    return _build(SeparatorConfig, data)


def _build(cls: type[T], data: dict[str, Any]) -> T:
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be an object, got {_json_type(data)}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)


# The paper's configuration, with docs/paper.md [default] values where the paper is silent.
PAPER = ModelConfig()

# Small enough that a useful model trains on 2 CPU cores in a few hours.
CPU = ModelConfig(
    query=QueryNetConfig(channels=(16, 16, 32, 32, 64, 64), gru_hidden=64, latent_dim=32),
    separator=SeparatorConfig(channels=(8, 16, 32, 64, 128, 256)),
)

# Spleeter 2-stems' U-Nets steered by the `cpu` preset's Query-net: start it with
# `aqsep train --init-separator spleeter` (and a released `cpu` model's Query-net with --init).
SPLEETER = ModelConfig(query=CPU.query, separator=PretrainedSeparatorConfig())

# Spleeter 2-stems (unconditioned, imported with --init-separator spleeter) in front of the `cpu`
# preset's Query-net and separator: vocals are Spleeter's, the other classes the separator's
# mask inside Spleeter's accompaniment.
CASCADE = ModelConfig(
    query=CPU.query,
    separator=CPU.separator,
    # the gate's classes: those of the model it is assembled from (aqsep.cascade.assemble)
    vocal_stage=PretrainedSeparatorConfig(conditioned=False, encoder_film=False, gate_classes=24),
)

PRESETS: dict[str, ModelConfig] = {
    "paper": PAPER,
    "cpu": CPU,
    "spleeter": SPLEETER,
    "cascade": CASCADE,
}

TRAIN_PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(),
    "cpu": TrainConfig(batch_size=16, max_steps=30_000, lr=5e-4, lr_decay_every=10_000),
    "spleeter": TrainConfig(
        batch_size=4,
        max_steps=20_000,
        lr=1e-4,
        lr_decay_every=10_000,
        lambda_latent=0.0,
        freeze_query=True,
        conditioning_lr_scale=10.0,
    ),
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
