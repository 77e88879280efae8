"""Python API: load a model once, build query latents, separate arrays or files.

>>> from aqsep import Separator
>>> sep = Separator()                                   # the bundled default model
>>> z = sep.query_latent(["hihat_clip.wav"])            # or sep.class_latent("drums")
>>> stems = sep.separate_file("song.flac", "out/", latent=z, residual=True)
>>> four = sep.separate(audio, 44100, {c: sep.class_latent(c) for c in sep.coarse_classes})
"""

from __future__ import annotations

import contextlib
import numbers
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aqsep.audio import (
    AUDIO_EXTENSIONS,
    AtomicAudioWriter,
    AudioReader,
    as_2d,
    output_format,
)
from aqsep.errors import AudioError, ModelError, OutputError, QueryError, SettingError
from aqsep.inference import (
    MASK_RULES,
    MAX_BATCH_SIZE,
    ChunkPlan,
    Latent,
    Network,
    Progress,
    as_network,
    separate_stream,
)
from aqsep.query import encode_blocks, encode_reader, slerp
from aqsep.release import ReleasedModel

if TYPE_CHECKING:
    import torch

QuerySource = str | Path | tuple[np.ndarray, int]

# The longest chunk a Separator runs at once, in seconds. Memory grows with the chunk (and the
# batch size), so it is bounded here; a chunk is also never longer than the input it separates
# (or the model's excerpt, if that is longer). Measured with the `cpu` preset on 44.1 kHz stereo:
# 30 s chunks peak about 0.33 GB above the loaded model with a batch of 1, 0.8 GB with 4.
MAX_SEGMENT_SECONDS = 30.0
MIN_SEGMENT_SECONDS = 0.1
# The largest overlap: every sample is separated 1 / (1 - overlap) times, so an overlap near 1
# costs unbounded time (0.9999999 on 6 s would be 134,041 chunks); 0.9 separates each sample
# at most 10 times (the default 0.25, 1.33 times).
MAX_OVERLAP = 0.9
# The longest output name, in bytes: file names hold 255 bytes, and the temporary that an output
# is written to adds a dot, the extension, the host (24 at most), the process id and a suffix.
MAX_NAME_BYTES = 180
DEVICES = ("auto", "cpu", "cuda", "mps")
# What runs the networks: PyTorch, or onnxruntime on the CPU with an ONNX export of the model
# (aqsep.onnx; the optional extra aqsep[onnx]). Both separate through the same core.
BACKENDS = ("torch", "onnx")
# The mask rule (aqsep.inference.combine_masks) when several outputs are separated together and no
# rule is given: normalised ratio masks, so that the outputs sum to the input. Chosen from
# docs/results.md ("Several targets in one pass"), which measures both rules per class.
DEFAULT_MASKS = "ratio"


def check_segment(segment: object) -> float:
    """A chunk length in seconds, from :data:`MIN_SEGMENT_SECONDS` to :data:`MAX_SEGMENT_SECONDS`;
    :class:`SettingError` otherwise."""
    value = _number("segment", segment)
    if not MIN_SEGMENT_SECONDS <= value <= MAX_SEGMENT_SECONDS:
        raise SettingError(
            f"segment must be from {MIN_SEGMENT_SECONDS:g} to {MAX_SEGMENT_SECONDS:g} s, "
            f"got {value:g}"
        )
    return value


def check_overlap(overlap: object) -> float:
    """The share of a chunk overlapping the next, from 0 to :data:`MAX_OVERLAP`;
    :class:`SettingError` otherwise."""
    value = _number("overlap", overlap)
    if not 0.0 <= value <= MAX_OVERLAP:
        raise SettingError(
            f"overlap must be from 0 to {MAX_OVERLAP:g} (each sample is separated "
            f"1 / (1 - overlap) times), got {value}"
        )
    return value


def check_batch_size(batch_size: object) -> int:
    """Chunks per forward pass, from 1 to :data:`MAX_BATCH_SIZE`; :class:`SettingError` otherwise."""
    value = _whole_number("batch size", batch_size, 1)
    if value > MAX_BATCH_SIZE:
        raise SettingError(
            f"batch size must be at most {MAX_BATCH_SIZE} (memory grows with it, speed "
            f"hardly), got {value}"
        )
    return value


def mask_rule(masks: str | None, targets: int, residual: bool) -> str:
    """The mask rule of a separation of ``targets`` outputs (and the rest, with ``residual``):
    ``masks`` if it is one of :data:`~aqsep.inference.MASK_RULES` and makes sense there, None:
    :data:`DEFAULT_MASKS` for several targets and ``"independent"`` for one.

    Raises:
        SettingError: an unknown rule, or ``"ratio"`` or ``"wiener"`` for one target without
            the rest (its estimate would be the whole input).
    """
    if masks is None:
        return DEFAULT_MASKS if targets > 1 else "independent"
    if masks not in MASK_RULES:
        raise SettingError(f"unknown mask rule {masks!r}; choose one of {', '.join(MASK_RULES)}")
    if masks != "independent" and targets == 1 and not residual:
        raise SettingError(
            f"{masks} masks of one target without the rest would give the whole input back: "
            "separate several targets, add the residual, or use independent masks"
        )
    return masks


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for ``"auto"`` (a GPU if there is one), ``"cpu"``, ``"cuda[:N]"`` or ``"mps"``.

    Raises :class:`SettingError` for an unknown device or one this machine does not have.
    """
    import torch

    if str(device) != "auto":
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            dev = None
        if dev is None or dev.type not in DEVICES:
            raise SettingError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SettingError(
                f"device {str(device)!r} was asked for but no CUDA GPU is available; use 'cpu'"
            )
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SettingError(
                f"device {str(device)!r} was asked for but this machine has "
                f"{torch.cuda.device_count()} CUDA GPU(s)"
            )
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise SettingError(
                f"device {str(device)!r} was asked for but MPS is not available; use 'cpu'"
            )
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def track_outputs(
    path: str | Path,
    out_dir: str | Path,
    *,
    name: str | Sequence[str] = "target",
    residual: bool = False,
    ext: str = "wav",
) -> tuple[str, dict[str, Path]]:
    """The track name of an input file and the paths :meth:`Separator.separate_file` writes for it.

    ``name`` is the output's name, or a sequence of names (one file each). The track is the file
    name less its audio suffix (``.stem.mp4`` for MUSDB18 stems, or one of
    :data:`~aqsep.audio.AUDIO_EXTENSIONS`); any other dot belongs to the name.

    Raises:
        OutputError: a name that is not a plain file name, given twice, or ``rest`` beside the
            residual.
    """
    path = Path(path)
    names = [name] if isinstance(name, str) else list(name)
    check_output_names(names, residual=residual)
    track = path.name
    for suffix in (".stem.mp4", *AUDIO_EXTENSIONS):
        if track.lower().endswith(suffix) and len(track) > len(suffix):
            track = track[: -len(suffix)]
            break
    folder = Path(out_dir) / track
    outputs = {n: folder / f"{n}.{ext}" for n in names}
    if residual:
        outputs["rest"] = folder / f"rest.{ext}"
    return track, outputs


def check_output_names(names: Sequence[str], *, residual: bool = False) -> None:
    """Raise :class:`OutputError` unless ``names`` are distinct plain file names (without an
    extension, not hidden, no folder), none of them ``rest`` when the residual is written too."""
    if not names:
        raise OutputError("no output name given")
    seen: dict[str, str] = {}
    for n in names:
        if not isinstance(n, str) or not n.strip() or n.startswith(".") or "/" in n or "\\" in n:
            raise OutputError(f"bad output name {n!r}: a plain file name without extension")
        if "\0" in n or not n.isprintable():
            raise OutputError(f"bad output name {n!r}: it holds control characters")
        if len(n.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise OutputError(
                f"output name {n[:40]!r}... is too long: at most {MAX_NAME_BYTES} bytes (a file "
                "name, its extension and its temporary's suffix must fit in 255)"
            )
        if residual and n == "rest":
            raise OutputError(
                "the output name 'rest' is taken by the residual; choose another name"
            )
        if n.lower() in seen:  # case-insensitive file systems would write one file
            raise OutputError(f"two outputs would be named {seen[n.lower()]!r} and {n!r}")
        seen[n.lower()] = n


def check_not_inputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path]) -> None:
    """Raise :class:`OutputError` if writing an output would replace one of ``inputs``.

    An output replaces the file its own name holds (a link is replaced, not what it points to), so
    it is refused when that file is an input's file, by whatever name (a link to it, a relative
    path, another spelling on a case-insensitive file system).
    """
    files = {}
    for given in inputs:
        with contextlib.suppress(OSError):
            st = os.stat(given)
            files[(st.st_dev, st.st_ino)] = given
    for out in outputs:
        try:
            st = os.lstat(out)
        except OSError:  # not there yet: it replaces nothing
            continue
        if (st.st_dev, st.st_ino) in files:
            raise OutputError(
                f"{out} is an input ({files[(st.st_dev, st.st_ino)]}): writing the output there "
                "would destroy it; choose another output folder"
            )


def file_plan(
    path: str | Path,
    out_dir: str | Path,
    names: Sequence[str],
    *,
    residual: bool = False,
    ext: str = "wav",
    bits: str | int = "16",
    force: bool = False,
    protect: Iterable[str | Path] = (),
) -> SeparatedFile:
    """What :meth:`Separator.separate_file` does with ``path``: the outputs it writes
    (:func:`track_outputs`), or nothing (``skipped``) when they all exist and not ``force``.

    Raises:
        OutputError: an output format or name that cannot be written, or an output that would
            replace ``path`` or a file of ``protect`` (:func:`check_not_inputs`).
    """
    ext, _ = output_format(ext, bits)
    track, outputs = track_outputs(path, out_dir, name=list(names), residual=residual, ext=ext)
    if not force and all(p.exists() for p in outputs.values()):
        return SeparatedFile(track, outputs, skipped=True)
    check_not_inputs(outputs.values(), [path, *protect])
    return SeparatedFile(track, outputs)


# How far past [0, 1] a mask value may be and still count as a mask (float rounding of a sigmoid
# in another runtime); anything further is a broken network, not a rounding.
MASK_TOLERANCE = 1e-3


class CheckedNetwork:
    """A :class:`~aqsep.inference.Network` whose masks are checked before they are applied.

    A model with NaN weights, or an exported graph that is broken, gives masks of NaN, of the
    wrong shape or far outside [0, 1]; applied, they would write NaN or full-scale noise without
    a word. Each mask must have the magnitude's shape and finite values in [0, 1].

    Raises (from :meth:`mask`):
        ModelError: a mask that fails the check, naming ``name`` (the model).
    """

    def __init__(self, network: Network, name: str) -> None:
        self.network, self.name = network, name
        self.config = network.config

    def mask(self, magnitude: np.ndarray, z: np.ndarray) -> np.ndarray:
        return self._checked(self.network.mask(magnitude, z), tuple(magnitude.shape), "mask")

    def stage_share(self, magnitude: np.ndarray) -> np.ndarray:
        share = self.network.stage_share(magnitude)
        return self._checked(share, tuple(magnitude.shape), "vocal-stage mask")

    def side(self, z: np.ndarray) -> np.ndarray:
        return self._checked(self.network.side(z), (z.shape[0],), "gate")

    def _checked(self, m: object, shape: tuple[int, ...], what: str) -> np.ndarray:
        problem = None
        if not isinstance(m, np.ndarray) or tuple(m.shape) != shape:
            got = tuple(m.shape) if isinstance(m, np.ndarray) else type(m).__name__
            problem = f"of shape {got} for an input of shape {shape}"
        elif not np.isfinite(m).all():
            problem = "holding NaN or infinite values"
        elif float(m.min()) < -MASK_TOLERANCE or float(m.max()) > 1 + MASK_TOLERANCE:
            problem = (
                f"with values from {float(m.min()):.3g} to {float(m.max()):.3g}, not in [0, 1]"
            )
        if problem is not None:
            raise ModelError(
                f"the model {self.name} gave a {what} {problem}: its weights or graph are broken; "
                "re-export or re-download it"
            )
        assert isinstance(m, np.ndarray)
        return m

    def latent(self, magnitude: np.ndarray) -> np.ndarray:
        return self.network.latent(magnitude)


@dataclass
class SeparatedFile:
    track: str
    outputs: dict[str, Path]
    skipped: bool = False
    clipped: int = 0


@dataclass(frozen=True, eq=False)
class Query:
    """What to separate, as a user names it; :meth:`Separator.latent_of` turns it into a latent.

    Exactly one of: ``name``, a class of the model (its stored mean latent); ``clips``, query
    clips (files or ``(array, sample_rate)`` pairs, their latents averaged); ``start`` and
    ``end``, a time range in seconds of the input being separated, where the instrument plays
    alone (``end`` None: to the input's end); ``latent``, a latent as it is. Then, optionally,
    slid ``towards`` a second such query (spherical interpolation by ``alpha``: 0 is this query,
    1 the other), then ``refine`` steps of the paper's iterative method on the input.

    >>> Query(name="vocals")
    >>> Query(start=12.0, end=15.5)                       # a range of the song itself
    >>> Query(clips=("hihat.wav",), towards=Query(name="drums"), alpha=0.3, refine=1)
    """

    name: str | None = None
    clips: tuple[QuerySource, ...] = ()
    start: float | None = None
    end: float | None = None
    latent: Latent | None = None
    towards: Query | None = None
    alpha: float = 0.0
    refine: int = 0

    def __post_init__(self) -> None:
        clips: object = self.clips
        if isinstance(clips, str | Path) or _is_array_pair(clips):
            clips = (clips,)  # one clip given alone
        if not isinstance(clips, list | tuple):
            raise QueryError(
                "query clips are file paths (str or Path) or (array, sample_rate) pairs, got "
                f"{type(clips).__name__}"
            )
        object.__setattr__(self, "clips", tuple(clips))

    @property
    def kind(self) -> str:
        """``"class"``, ``"clips"``, ``"range"`` or ``"latent"``; :class:`QueryError` unless the
        query says exactly one of them."""
        given = [
            kind
            for kind, said in (
                ("class", self.name is not None),
                ("clips", bool(self.clips)),
                ("range", self.start is not None or self.end is not None),
                ("latent", self.latent is not None),
            )
            if said
        ]
        if len(given) != 1:
            raise QueryError(
                "a query is one of a class name, clips, a time range or a latent; this one gives "
                + (" and ".join(given) if given else "none of them")
            )
        return given[0]

    def describe(self) -> str:
        """A few words for messages: ``class vocals``, ``2 clips``, ``range 5-8 s``."""
        kind = self.kind
        if kind == "class":
            return f"class {self.name}"
        if kind == "clips":
            return f"{len(self.clips)} clip{'s' if len(self.clips) != 1 else ''}"
        if kind == "range":
            end = "the end" if self.end is None else f"{self.end:g}"
            return f"range {self.start or 0:g}-{end} s"
        return "a latent"


# One latent or query (the output is named "target", or ``name``), or one per named output.
Targets = Latent | Query | Mapping[str, Latent | Query]


#: The MUSDB18 stems: the coarse classes that partition a song, where a model has all four.
MUSDB_CLASSES = ("bass", "drums", "other", "vocals")


class Separator:
    """A loaded model and the settings of chunked inference.

    Args:
        model: a released model folder, a bundled model name, an already loaded
            :class:`~aqsep.release.ReleasedModel`, or None for the bundled default; with the
            ``"onnx"`` backend, an ONNX export's folder (:func:`aqsep.onnx.export_onnx`).
        device: "auto", "cpu", "cuda" or "mps" (the ``"onnx"`` backend: "auto" or "cpu").
        segment: chunk length in seconds (default: the model's excerpt length), from 0.1 to
            :data:`MAX_SEGMENT_SECONDS`; never longer than the input (or the model's excerpt).
        overlap: fraction of each chunk shared with the next, from 0 to :data:`MAX_OVERLAP`.
        batch_size: chunks per forward pass, a whole number from 1 to :data:`MAX_BATCH_SIZE`;
            None (the default): as many as make about 12 s of audio
            (:func:`aqsep.inference.auto_batch_size`: 4 for the fast model, 1 for the default).
        backend: ``"torch"`` (PyTorch) or ``"onnx"`` (onnxruntime on the CPU).

    Raises:
        SettingError: a setting out of range or of the wrong type, or an unavailable device.
        ModelError: the model cannot be loaded.
    """

    def __init__(
        self,
        model: str | Path | ReleasedModel | None = None,
        *,
        device: str = "auto",
        segment: float | None = None,
        overlap: float = 0.25,
        batch_size: int | None = None,
        backend: str = "torch",
    ) -> None:
        if backend not in BACKENDS:
            raise SettingError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if segment is not None:
            segment = check_segment(segment)
        overlap = check_overlap(overlap)
        if model is not None and not isinstance(model, str | Path | ReleasedModel):
            raise ModelError(
                "model must be a model folder, a bundled model's name, a loaded ReleasedModel or "
                f"None (the bundled default), got {type(model).__name__}"
            )
        if batch_size is not None:
            batch_size = check_batch_size(batch_size)
        if isinstance(model, ReleasedModel):
            self.released = model
        elif backend == "onnx":
            from aqsep.onnx import load_onnx_model  # no PyTorch on this path

            self.released = load_onnx_model(model)
        else:
            from aqsep.release import load_model

            self.released = load_model(model)
        runs_onnx = not _is_torch_module(self.released.model)
        if runs_onnx and str(device) not in ("auto", "cpu"):
            raise SettingError(f"the ONNX backend runs on the CPU, not on {device}")
        self.device: Any = "cpu" if runs_onnx else pick_device(device)
        self.model = self.released.model
        if not runs_onnx:
            self.model = self.model.to(self.device).eval()
        where = self.released.path if self.released.path is not None else "given"
        self._network = CheckedNetwork(as_network(self.model, self.device), str(where))
        self.segment, self.overlap, self.batch_size = segment, overlap, batch_size

    # ---- latents ---------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return sorted(self.released.classes)

    @property
    def coarse_classes(self) -> list[str]:
        """The model's coarse classes that partition a song (vocals, drums, bass, other for a
        MUSDB-style model): together they make up a whole song. A data set's own coarse name
        that covers several of them (MIR-1K's "accompaniment": everything but the voice) stays a
        class to ask for, but is not one of these where the model has the four."""
        coarse = sorted(k for k, c in self.released.classes.items() if c.level == "coarse")
        four = [k for k in coarse if k in MUSDB_CLASSES]
        return four if len(four) == len(MUSDB_CLASSES) else coarse

    @property
    def latent_dim(self) -> int:
        return int(self.model.config.query.latent_dim)

    def class_latent(self, name: str) -> np.ndarray:
        """The stored mean latent of a class ("separation without a query")."""
        if not isinstance(name, str) or not name.strip():
            raise QueryError(
                f"a class name is needed, got {name!r}; this model knows: {', '.join(self.classes)}"
            )
        return self.released.class_latent(name.strip())

    def check_latent(self, latent: object) -> np.ndarray:
        """``latent`` as a float32 array ``(latent_dim,)``; :class:`QueryError` if it is not one.

        Accepts a numpy array, a torch tensor (on any device) or a list of numbers, of shape
        ``(latent_dim,)`` or ``(1, latent_dim)``, with finite values.
        """
        dim = self.latent_dim
        if not isinstance(latent, np.ndarray | list | tuple) and not hasattr(latent, "detach"):
            raise QueryError(
                f"a latent must be an array of {dim} numbers, got {type(latent).__name__}"
            )
        if hasattr(latent, "detach"):  # a torch tensor, on any device
            latent = latent.detach().cpu().numpy()
        try:
            raw = np.asarray(latent)
        except (TypeError, ValueError):
            raise QueryError(f"a latent must be {dim} numbers, got {latent!r:.80}") from None
        if raw.dtype.kind in "cb":
            raise QueryError(f"a latent must hold real numbers, got dtype {raw.dtype}")
        if raw.dtype.kind not in "iuf":
            raise QueryError(f"a latent must be {dim} numbers, got {latent!r:.80}")
        z = raw.astype(np.float32)
        if z.ndim == 2 and z.shape[0] == 1:
            z = z[0]
        if z.shape != (dim,):
            raise QueryError(
                f"a latent of shape {z.shape} does not fit this model, which takes ({dim},)"
            )
        if not np.isfinite(z).all():
            raise QueryError("the latent holds NaN or infinite values")
        return z

    def query_latent(self, queries: QuerySource | Sequence[QuerySource]) -> np.ndarray:
        """Mean latent of one or more query clips (files, or ``(array, sample_rate)`` pairs).

        One clip may be given alone (``"clip.wav"``). Each clip is encoded window by window and
        its non-silent windows averaged; then the clips are averaged.
        """
        if isinstance(queries, np.ndarray):
            raise QueryError("give an audio array with its sample rate: (array, sample_rate)")
        if queries is None or isinstance(queries, bytes | bytearray):
            raise QueryError(
                "a query is a file path (str or Path) or an (array, sample_rate) pair, or a list "
                f"of them; got {type(queries).__name__}"
            )
        items: list[QuerySource]
        if isinstance(queries, str | Path) or _is_array_pair(queries):
            items = [queries]  # type: ignore[list-item]
        else:
            try:
                items = list(queries)  # type: ignore[arg-type]
            except TypeError:
                raise QueryError(
                    "a query is a file path (str or Path) or an (array, sample_rate) pair, or a "
                    f"list of them; got {type(queries).__name__}"
                ) from None
        if not items:
            raise QueryError("no query given")
        latents = []
        for q in items:
            with _reader(q) as reader:
                self._check_long_enough(reader.frames, reader.sample_rate, f"query {reader.name}")
                z = encode_reader(self._network, reader)
                latents.append(self._network_latent(z, f"query {reader.name}"))
        return np.stack(latents).mean(axis=0)

    def _network_latent(self, z: np.ndarray, what: str) -> np.ndarray:
        """``z``, a latent the Query-net gave for ``what``; :class:`ModelError` if it is not finite
        (a model with broken weights or graph)."""
        if not np.isfinite(z).all():
            raise ModelError(
                f"the model {self._network.name} gave a latent holding NaN or infinite values for "
                f"{what}: its weights or graph are broken; re-export or re-download it"
            )
        return z

    def _check_long_enough(self, frames: int, sample_rate: int, what: str) -> None:
        """A query needs at least one STFT window of the model: less is too short to describe."""
        a = self.model.config.audio
        need = a.n_fft / a.sample_rate
        if frames / sample_rate < need:
            raise QueryError(
                f"{what} is too short ({frames} samples, {1000 * frames / sample_rate:.1f} ms): "
                f"a query needs at least {1000 * need:.0f} ms of audio"
            )

    def range_latent(self, source: QuerySource, start: float, end: float | None) -> np.ndarray:
        """Latent of a time range (seconds) of a file or array, e.g. where an instrument plays alone."""
        start = _number("query range start", start)
        end = None if end is None else _number("query range end", end)
        with _reader(source) as reader:
            duration = reader.frames / reader.sample_rate
            end = duration if end is None else end
            if start < 0 or end <= start:
                raise QueryError(
                    f"query range {start}:{end} is empty or negative; use START:END with START < END"
                )
            if start >= duration:
                raise QueryError(
                    f"query range starts at {start:.2f} s but {reader.name} lasts {duration:.2f} s"
                )
            s, e = round(start * reader.sample_rate), round(min(end, duration) * reader.sample_rate)
            self._check_long_enough(
                e - s, reader.sample_rate, f"range {start:g}:{end:g} s of {reader.name}"
            )
            what = f"range {start:g}:{end:g} s of {reader.name}"
            z = encode_reader(self._network, reader, start=s, stop=e, what=what)
            return self._network_latent(z, what)

    def blend(self, z0: Latent, z1: Latent, alpha: float) -> np.ndarray:
        """Spherical interpolation between two latents of this model (alpha 0 -> z0, 1 -> z1).

        Raises:
            QueryError: a latent that does not fit the model (:meth:`check_latent`), or a weight
                outside [0, 1].
        """
        z0, z1 = self.check_latent(z0), self.check_latent(z1)
        alpha = _number("blend weight", alpha)
        if not 0.0 <= alpha <= 1.0:
            raise QueryError(f"blend weight must be in [0, 1], got {alpha:g}")
        return slerp(z0, z1, alpha)

    def refine(
        self,
        source: QuerySource,
        latent: Latent,
        steps: int = 1,
        *,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """The paper's iterative method: separate, then encode the estimate as a query; ``steps``
        times. The estimate is encoded block by block as it is separated (never held whole).

        ``progress`` receives the separation's events (see :meth:`separate`) with ``"pass"``
        1..``steps`` and ``"passes"`` = ``steps``.
        """
        steps = _whole_number("refinement steps", steps, 0)
        return self._refined(source, self.check_latent(latent), steps, progress, 0, steps)

    def _refined(
        self,
        source: QuerySource,
        latent: np.ndarray,
        steps: int,
        progress: Progress | None,
        first: int,
        passes: int,
    ) -> np.ndarray:
        """:meth:`refine`, its passes reported as ``first + 1``.. of ``passes``."""
        for k in range(steps):
            with _reader(source) as reader:
                chunking = self._chunking(reader, _each_pass(progress, first + k, passes))
                estimate = separate_stream(self._network, reader, [latent], **chunking)
                latent = encode_blocks(
                    self._network,
                    (block[0] for block in estimate),
                    reader.sample_rate,
                    what="the estimate to refine",
                )
                latent = self._network_latent(latent, "the estimate to refine")
        return latent

    def latent_of(
        self,
        query: Query | Latent,
        source: QuerySource | None = None,
        *,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """The latent that ``query`` asks for, checked against the model (a latent as it is).

        ``source`` is the input to be separated (a file, or an ``(array, sample_rate)`` pair):
        a range query is read from it and refinement separates it. ``progress`` receives the
        refinement passes' events (see :meth:`refine`).

        Raises:
            QueryError: a query that gives none or several of its kinds, a range or refinement
                without ``source``, a slide towards a query that slides or refines itself, or
                what the kind's own method raises (:meth:`class_latent`, :meth:`query_latent`,
                :meth:`range_latent`, :meth:`blend`, :meth:`check_latent`).
        """
        if not isinstance(query, Query):
            return self._checked_latent(query)
        refine = _whole_number("refinement steps", query.refine, 0)
        return self._planned(query, source, progress, 0, refine)

    def _planned(
        self,
        query: Query,
        source: QuerySource | None,
        progress: Progress | None,
        first: int,
        passes: int,
    ) -> np.ndarray:
        """:meth:`latent_of`, its refinement reported as passes ``first + 1``.. of ``passes``."""
        z = self._base_latent(query, source)
        if query.towards is not None:
            other = query.towards
            if other.towards is not None or other.refine:
                raise QueryError(
                    f"the query slid towards ({other.describe()}) is a class, clips, a range or "
                    "a latent: it cannot slide or be refined itself"
                )
            z = self.blend(z, self._base_latent(other, source), query.alpha)
        elif query.alpha:
            raise QueryError(f"a blend weight ({query.alpha:g}) needs a query to slide towards")
        steps = _whole_number("refinement steps", query.refine, 0)
        if steps:
            if source is None:
                raise QueryError("refinement separates the input: give the input to refine on")
            z = self._refined(source, z, steps, progress, first, passes)
        return z

    def _base_latent(self, query: Query, source: QuerySource | None) -> np.ndarray:
        kind = query.kind
        if kind == "class":
            return self.class_latent(str(query.name))
        if kind == "clips":
            return self.query_latent(list(query.clips))
        if kind == "range":
            if source is None:
                raise QueryError("a time range is read from the input: give the input")
            return self.range_latent(source, query.start or 0.0, query.end)
        return self._checked_latent(query.latent)  # type: ignore[arg-type]  # kind: not None

    # ---- separation ------------------------------------------------------------------------
    def chunk_plan(self, frames: int, sample_rate: int) -> ChunkPlan:
        """Where the chunks of an input of ``frames`` samples lie: a latent may be given per chunk,
        ``(len(plan.starts), latent_dim)``, in their order."""
        return ChunkPlan.for_model(
            self.model, frames, sample_rate, self._segment(frames, sample_rate), self.overlap
        )

    def _segment(self, frames: int, sample_rate: int) -> float:
        config = self.model.config
        segment = self.segment if self.segment is not None else config.output_audio.segment_seconds
        # no chunk longer than what it separates (the zeros it would be padded with change what
        # a separator that normalises over its patch predicts)
        longest = max(frames / sample_rate, min(config.audio.segment_seconds, segment))
        return min(segment, longest)

    def _chunking(self, reader: AudioReader, progress: Progress | None) -> dict:
        return {
            "segment": self._segment(reader.frames, reader.sample_rate),
            "overlap": self.overlap,
            "batch_size": self.batch_size,
            "device": self.device,
            "progress": progress,
        }

    def separate(
        self,
        audio: np.ndarray,
        sample_rate: int,
        latent: Targets,
        *,
        residual: bool = False,
        masks: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, np.ndarray]:
        """Separate an array ``(channels, samples)`` or ``(samples,)`` into named estimates.

        ``latent`` is one latent or :class:`Query` (the output is ``"target"``) or a mapping
        ``{name: latent or query}``, e.g. ``{"vocals": z1, "drums": Query(name="drums")}``: every
        target in one pass over the input. A latent is ``(latent_dim,)``, or one per chunk (see
        :meth:`chunk_plan`); a query is turned into one on this input (:meth:`latent_of`).
        Returns ``{name: estimate}`` in the mapping's order, and ``"rest"`` (the input minus
        every estimate) with ``residual``.

        ``masks`` says how the targets' masks are combined (:func:`aqsep.inference.combine_masks`):
        ``"ratio"`` scales them to add up to one in every bin, so that the estimates (with the
        rest, under ``residual``) sum to the input; ``"wiener"`` refines those estimates with a
        multichannel Wiener filter (:func:`aqsep.inference.wiener_filter`), still summing to the
        input; ``"independent"`` keeps each as predicted. None: :data:`DEFAULT_MASKS` for several
        targets, ``"independent"`` for one (:func:`mask_rule`).

        The estimates have the input's shape and sample rate; the caller's array is not modified.
        Integer arrays are PCM (int16 full scale is 32768); the estimates are float32.
        ``progress`` is called after each batch of chunks with ``{"stage": "separate", "done",
        "total", "seconds", "pass", "passes"}`` (chunks done, chunks, input seconds done; the
        queries' refinement passes first, then the separation, the last pass).

        Raises:
            QueryError: a latent or query that does not fit the model, or no target.
            OutputError: a bad output name, or ``rest`` beside ``residual``.
            SettingError: a mask rule that :func:`mask_rule` refuses.
        """
        targets = self._targets(latent, "target", residual)
        rule = mask_rule(masks, len(targets), residual)
        mix = as_2d(audio)
        latents, passes = self._latents(targets, (mix, sample_rate), progress)
        reader = AudioReader(mix, sample_rate)
        chunking = self._chunking(reader, _each_pass(progress, passes - 1, passes))
        blocks = separate_stream(
            self._network,
            reader,
            list(latents.values()),
            masks=rule,
            rest=residual,
            **chunking,
        )
        est = np.concatenate(list(blocks), axis=-1)
        out = dict(zip(latents, est, strict=True))
        if residual:
            out["rest"] = mix - est.sum(axis=0)
        if np.ndim(audio) == 1:
            out = {k: v[0] for k, v in out.items()}
        return out

    def separate_file(
        self,
        path: str | Path,
        out_dir: str | Path,
        latent: Targets,
        *,
        name: str = "target",
        residual: bool = False,
        masks: str | None = None,
        ext: str = "wav",
        bits: str | int = "16",
        force: bool = False,
        protect: Iterable[str | Path] = (),
        progress: Progress | None = None,
    ) -> SeparatedFile:
        """Separate one file into ``out_dir/<track>/<name>.<ext>`` (and ``rest.<ext>``), atomically.

        ``latent`` is one latent or :class:`Query`, written as ``name``, or a mapping ``{name:
        latent or query}``, one file per name, all in one pass over the file; a query is turned
        into a latent on this file (:meth:`latent_of`) once the outputs are known to be needed.
        ``masks`` and ``progress`` as in :meth:`separate`. ``ext`` is ``"wav"`` or ``"flac"``;
        ``bits`` 16 or 24 (integer) or ``"32f"`` (float). What is written, skipped or refused
        is :func:`file_plan`'s: a track whose outputs all exist is skipped unless ``force``, and
        no output replaces the input, a query clip or a file of ``protect`` (:class:`OutputError`).
        On an error nothing is left under an output name, nor a folder made for it.
        """
        targets = self._targets(latent, name, residual)
        rule = mask_rule(masks, len(targets), residual)
        clips = [c for q in targets.values() if isinstance(q, Query) for c in _clip_files(q)]
        plan = file_plan(
            path,
            out_dir,
            list(targets),
            residual=residual,
            ext=ext,
            bits=bits,
            force=force,
            protect=[*protect, *clips],
        )
        if plan.skipped:
            return plan
        latents, passes = self._latents(targets, path, progress)
        ext, bits = output_format(ext, bits)
        outputs = plan.outputs
        with contextlib.ExitStack() as stack:
            reader = stack.enter_context(AudioReader(path))
            writers = {
                k: stack.enter_context(
                    AtomicAudioWriter(
                        p,
                        reader.sample_rate,
                        reader.channels,
                        bits=bits,
                        fmt=ext,
                        frames=reader.frames,
                    )
                )
                for k, p in outputs.items()
            }
            pos = 0
            chunking = self._chunking(reader, _each_pass(progress, passes - 1, passes))
            blocks = separate_stream(
                self._network,
                reader,
                list(latents.values()),
                masks=rule,
                rest=residual,
                **chunking,
            )
            for block in blocks:
                for k, estimate in zip(latents, block, strict=True):
                    writers[k].write(estimate)
                if residual:
                    writers["rest"].write(reader.read(pos, block.shape[-1]) - block.sum(axis=0))
                pos += block.shape[-1]
        return SeparatedFile(plan.track, outputs, clipped=sum(w.clipped for w in writers.values()))

    def _targets(self, latent: Targets, name: str, residual: bool) -> dict[str, Latent | Query]:
        """``{name: latent or query}`` from one or a mapping of them, the names checked."""
        if isinstance(latent, Mapping):
            if not latent:
                raise QueryError("no target given: give at least one latent or query")
            targets: dict[str, Latent | Query] = dict(latent)
        else:
            targets = {name: latent}
        check_output_names(list(targets), residual=residual)
        return targets

    def _latents(
        self,
        targets: Mapping[str, Latent | Query],
        source: QuerySource,
        progress: Progress | None,
    ) -> tuple[dict[str, np.ndarray], int]:
        """Each target's checked latent, the queries' made on ``source``; and the passes over it
        that the separation takes (the refinement steps, then the separation itself)."""
        steps = {
            k: _whole_number("refinement steps", q.refine, 0) if isinstance(q, Query) else 0
            for k, q in targets.items()
        }
        passes, first, latents = 1 + sum(steps.values()), 0, {}
        for k, q in targets.items():
            if isinstance(q, Query):
                latents[k] = self._planned(q, source, progress, first, passes)
                first += steps[k]
            else:
                latents[k] = self._checked_latent(q)
        return latents, passes

    def _checked_latent(self, latent: Latent) -> np.ndarray:
        """One latent (:meth:`check_latent`), or a ``(chunks, latent_dim)`` array of them."""
        if len(getattr(latent, "shape", ())) == 2 and latent.shape[0] > 1:
            return np.stack([self.check_latent(z) for z in latent])
        return self.check_latent(latent)


def _is_torch_module(model: object) -> bool:
    """Whether ``model`` is a PyTorch module (without importing PyTorch: a module can only exist
    once it has been imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _each_pass(progress: Progress | None, index: int, passes: int) -> Progress | None:
    """``progress`` with the pass number (1-based) and the count of passes added to each event."""
    if progress is None:
        return None
    report = progress

    def forward(info: dict) -> None:
        report({**info, "pass": index + 1, "passes": passes})

    return forward


def _number(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SettingError(f"{what} must be a number, got {value!r}")
    if not np.isfinite(float(value)):
        raise SettingError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _whole_number(what: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SettingError(f"{what} must be a whole number, got {value!r}")
    if value < minimum:
        raise SettingError(f"{what} must be at least {minimum}, got {value}")
    return int(value)


def _clip_files(query: Query) -> list[str | Path]:
    """The files a query (and the query it slides towards) reads as clips."""
    files = [c for c in query.clips if isinstance(c, str | Path)]
    return files + (_clip_files(query.towards) if query.towards is not None else [])


def _is_array_pair(source: object) -> bool:
    return (
        isinstance(source, tuple)
        and len(source) == 2
        and isinstance(source[0], np.ndarray)
        and not isinstance(source[1], np.ndarray | str | Path)
    )


@contextlib.contextmanager
def _reader(source: QuerySource):
    if isinstance(source, tuple):
        if not _is_array_pair(source):
            raise QueryError(
                "a query is a file path or an (array, sample_rate) pair, got a tuple of "
                f"{len(source)} items"
            )
        rate = source[1]
        if isinstance(rate, bool) or not isinstance(rate, numbers.Integral):
            raise AudioError(
                f"the sample rate of a query array must be a whole number, got {rate!r}"
            )
        reader = AudioReader(source[0], int(rate))
    elif isinstance(source, str | Path):
        reader = AudioReader(source)
    else:
        raise QueryError(
            f"a query is a file path or an (array, sample_rate) pair, got {type(source).__name__}"
        )
    try:
        yield reader
    finally:
        reader.close()


__all__ = [
    "DEFAULT_MASKS",
    "Query",
    "Separator",
    "SeparatedFile",
    "Targets",
    "check_batch_size",
    "check_not_inputs",
    "check_output_names",
    "check_overlap",
    "check_segment",
    "file_plan",
    "mask_rule",
    "pick_device",
    "track_outputs",
    "Callable",
]
