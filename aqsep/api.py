"""Python API: load a model once, build query latents, separate arrays or files.

>>> from aqsep import Separator
>>> sep = Separator()                                   # the bundled default model
>>> z = sep.query_latent(["hihat_clip.wav"])            # or sep.class_latent("drums")
>>> stems = sep.separate_file("song.flac", "out/", latent=z, residual=True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aqsep.audio import AtomicAudioWriter, AudioReader, as_2d
from aqsep.errors import OutputError, QueryError
from aqsep.inference import Latent, Progress, separate_stream
from aqsep.query import LatentAverager, encode_reader, slerp
from aqsep.release import ReleasedModel, load_model

QuerySource = str | Path | tuple[np.ndarray, int]


def pick_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) != "auto":
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise QueryError(
                "--device cuda was asked for but no CUDA GPU is available; use --device cpu"
            )
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise QueryError(
                "--device mps was asked for but MPS is not available; use --device cpu"
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
    name: str = "target",
    residual: bool = False,
    ext: str = "wav",
) -> tuple[str, dict[str, Path]]:
    """The track name of an input file and the paths :meth:`Separator.separate_file` writes for it."""
    path = Path(path)
    if residual and name == "rest":
        raise OutputError("the output name 'rest' is taken by the residual; choose another name")
    track = path.name.split(".")[0] if path.name.endswith(".stem.mp4") else path.stem
    folder = Path(out_dir) / track
    outputs = {name: folder / f"{name}.{ext}"}
    if residual:
        outputs["rest"] = folder / f"rest.{ext}"
    return track, outputs


@dataclass
class SeparatedFile:
    track: str
    outputs: dict[str, Path]
    skipped: bool = False
    clipped: int = 0


class Separator:
    """A loaded model and the settings of chunked inference.

    Args:
        model: a released model folder, a bundled model name, an already loaded
            :class:`~aqsep.release.ReleasedModel`, or None for the bundled default.
        device: "auto", "cpu", "cuda" or "mps".
        segment: chunk length in seconds (default: the model's excerpt length).
        overlap: fraction of each chunk shared with the next, in [0, 1).
        batch_size: chunks per forward pass.
        progress: callback receiving dicts ``{"stage", "done", "total", "seconds"}``.
    """

    def __init__(
        self,
        model: str | Path | ReleasedModel | None = None,
        *,
        device: str = "auto",
        segment: float | None = None,
        overlap: float = 0.25,
        batch_size: int = 4,
        progress: Progress | None = None,
    ) -> None:
        self.device = pick_device(device)
        self.released = model if isinstance(model, ReleasedModel) else load_model(model)
        self.model = self.released.model.to(self.device).eval()
        self.segment, self.overlap, self.batch_size = segment, overlap, batch_size
        self.progress = progress
        if not 0.0 <= overlap < 1.0:
            raise QueryError(f"overlap must be in [0, 1), got {overlap}")
        if segment is not None and segment < 0.1:
            raise QueryError(f"segment must be at least 0.1 s, got {segment}")
        if batch_size < 1:
            raise QueryError(f"batch size must be at least 1, got {batch_size}")

    # ---- latents ---------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return sorted(self.released.classes)

    def class_latent(self, name: str) -> torch.Tensor:
        """The stored mean latent of a class ("separation without a query")."""
        return self.released.class_latent(name)

    def query_latent(self, queries: Sequence[QuerySource]) -> torch.Tensor:
        """Mean latent of one or more query clips (files, or ``(array, sample_rate)`` pairs).

        Each clip is encoded window by window and its non-silent windows averaged; then the
        clips are averaged.
        """
        if not queries:
            raise QueryError("no query given")
        latents = []
        for q in queries:
            with _reader(q) as reader:
                latents.append(encode_reader(self.model, reader, device=self.device))
        return torch.stack(latents).mean(dim=0)

    def range_latent(self, source: QuerySource, start: float, end: float | None) -> torch.Tensor:
        """Latent of a time range (seconds) of a file or array, e.g. where an instrument plays alone."""
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
            return encode_reader(
                self.model,
                reader,
                start=s,
                stop=e,
                device=self.device,
                what=f"range {start:g}:{end:g} s of {reader.name}",
            )

    @staticmethod
    def blend(z0: torch.Tensor, z1: torch.Tensor, alpha: float) -> torch.Tensor:
        """Spherical interpolation between two latents (alpha 0 -> z0, 1 -> z1)."""
        if not 0.0 <= alpha <= 1.0:
            raise QueryError(f"blend weight must be in [0, 1], got {alpha}")
        return slerp(z0, z1, alpha)

    def refine(self, source: QuerySource, latent: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """The paper's iterative method: separate, re-encode the estimate, repeat ``steps`` times."""
        for _ in range(steps):
            averager = LatentAverager(self.model)
            with _reader(source) as reader:
                for _ in separate_stream(
                    self.model,
                    reader,
                    latent,
                    native=False,
                    on_estimate=averager.add_magnitudes,
                    **self._chunking(),
                ):
                    pass
            latent = averager.mean("the estimate to refine")
        return latent

    # ---- separation ------------------------------------------------------------------------
    def _chunking(self) -> dict:
        return {
            "segment": self.segment,
            "overlap": self.overlap,
            "batch_size": self.batch_size,
            "device": self.device,
            "progress": self.progress,
        }

    def separate(
        self, audio: np.ndarray, sample_rate: int, latent: Latent, *, residual: bool = False
    ) -> dict[str, np.ndarray]:
        """Separate an array ``(channels, samples)`` or ``(samples,)``; returns ``{"target", ["rest"]}``.

        The estimate has the input's shape and sample rate; the caller's array is not modified.
        """
        mix = as_2d(audio)
        reader = AudioReader(mix, sample_rate)
        est = np.concatenate(
            list(separate_stream(self.model, reader, latent, **self._chunking())), axis=1
        )
        if np.ndim(audio) == 1:
            est = est[0]
            mix = mix[0]
        out = {"target": est}
        if residual:
            out["rest"] = mix - est
        return out

    def separate_file(
        self,
        path: str | Path,
        out_dir: str | Path,
        latent: Latent,
        *,
        name: str = "target",
        residual: bool = False,
        ext: str = "wav",
        bits: str = "16",
        force: bool = False,
    ) -> SeparatedFile:
        """Separate one file into ``out_dir/<track>/<name>.<ext>`` (and ``rest.<ext>``), atomically.

        A track whose outputs all exist is skipped unless ``force``.
        """
        track, outputs = track_outputs(path, out_dir, name=name, residual=residual, ext=ext)
        if not force and all(p.exists() for p in outputs.values()):
            return SeparatedFile(track, outputs, skipped=True)
        with contextlib.ExitStack() as stack:
            reader = stack.enter_context(AudioReader(path))
            writers = {
                k: stack.enter_context(
                    AtomicAudioWriter(p, reader.sample_rate, reader.channels, bits=bits, fmt=ext)
                )
                for k, p in outputs.items()
            }
            pos = 0
            for block in separate_stream(self.model, reader, latent, **self._chunking()):
                writers[name].write(block)
                if residual:
                    writers["rest"].write(reader.read(pos, block.shape[1]) - block)
                pos += block.shape[1]
        return SeparatedFile(track, outputs, clipped=sum(w.clipped for w in writers.values()))


@contextlib.contextmanager
def _reader(source: QuerySource):
    if isinstance(source, tuple):
        reader = AudioReader(source[0], source[1])
    else:
        reader = AudioReader(source)
    try:
        yield reader
    finally:
        reader.close()


__all__ = ["Separator", "SeparatedFile", "pick_device", "track_outputs", "Callable"]
