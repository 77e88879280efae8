"""The methods of an evaluation: the latents of the model's query modes (``gt``, ``mean``,
``iterative``), the references (``mixture``, the oracle ``irm``), the estimate each gives, and
their names and labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from aqsep.api import Query
from aqsep.data.track import TrackAudio
from aqsep.errors import QueryError
from aqsep.inference import native_grid
from aqsep.query import encode_clip
from aqsep.transforms import istft, stft

if TYPE_CHECKING:
    from aqsep.api import Separator


MODES = ("gt", "mean", "iterative")
REFERENCE_METHODS = ("mixture", "irm")
METHODS = MODES + REFERENCE_METHODS

#: Receives progress events (dicts with a ``"stage"``).
Progress = Callable[[dict], None]


def gt_latents(separator: Separator, reference: np.ndarray, sample_rate: int) -> np.ndarray:
    """GT mode: one latent per chunk of the separation, ``(chunks, latent_dim)``, each the query
    latent of the true target in that chunk (:func:`aqsep.query.encode_clip`).

    A chunk where the target is below the silence threshold takes the latent of the whole true
    target. Raises :class:`QueryError` if the whole target is below it.
    """
    plan = separator.chunk_plan(reference.shape[1], sample_rate)
    whole: np.ndarray | None = None
    latents = []
    for start in plan.starts:
        chunk = np.zeros((reference.shape[0], plan.segment), dtype=np.float32)
        block = reference[:, start : start + plan.segment]
        chunk[:, : block.shape[1]] = block
        try:
            z = encode_clip(separator.model, chunk, sample_rate, device=separator.device)
        except QueryError:
            if whole is None:
                whole = encode_clip(
                    separator.model,
                    reference,
                    sample_rate,
                    device=separator.device,
                    what="the true target",
                )
            z = whole
        latents.append(z)
    return np.stack(latents)


def model_latent(
    separator: Separator,
    track: TrackAudio,
    target: str,
    mode: str,
    refine: int = 1,
    notes: list[str] | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """The latent(s) that ``mode`` gives for ``target`` on ``track`` (see the module docstring):
    ``(latent_dim,)``, or ``(chunks, latent_dim)`` in GT mode.

    In iterative mode an estimate too quiet to re-encode keeps the class mean; that is recorded
    in ``notes``.
    """
    if mode == "gt":
        return gt_latents(separator, track.source(target), track.sample_rate)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    z = separator.latent_of(Query(name=target))
    if mode == "mean":
        return z
    try:
        return separator.latent_of(
            Query(latent=z, refine=refine), (track.mixture, track.sample_rate), progress=progress
        )
    except QueryError as err:
        if notes is not None:
            notes.append(
                f"{target}: kept the class mean, the estimate could not be re-encoded ({err})"
            )
        return z


def oracle_irm(track: TrackAudio, target: str, n_fft: int, hop: int) -> np.ndarray:
    """Ideal ratio mask ``|T| / (|T| + |R|)`` from the true stems, applied to the mixture."""
    t = torch.from_numpy(track.source(target))
    mix = torch.from_numpy(track.mixture)
    spec_t, spec_m = stft(t, n_fft, hop), stft(mix, n_fft, hop)
    mag_t, mag_r = spec_t.abs(), (spec_m - spec_t).abs()
    mask = mag_t / (mag_t + mag_r).clamp_min(1e-8)
    return istft(spec_m * mask, n_fft, hop, length=track.frames).numpy().astype(np.float32)


def estimate(
    separator: Separator,
    track: TrackAudio,
    target: str,
    method: str,
    *,
    refine: int = 1,
    notes: list[str] | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """The estimate ``(channels, samples)`` of ``target`` that ``method`` gives on ``track``.

    ``progress`` receives the separator's events of every pass (refinement passes first).
    """
    if method == "mixture":
        return track.mixture.copy()
    if method == "irm":
        n_fft, hop = native_grid(separator.model, track.sample_rate)
        return oracle_irm(track, target, n_fft, hop)
    latent = model_latent(separator, track, target, method, refine, notes, progress)
    return separator.separate(track.mixture, track.sample_rate, latent, progress=progress)["target"]


def method_name(method: str, refine: int = 1, fast: bool = False) -> str:
    """Folder name of a method's results: ``iterative`` with N > 1 steps is ``iterative<N>``."""
    name = f"iterative{refine}" if method == "iterative" and refine != 1 else method
    return f"{name}-fast" if fast else name


def method_label(method: str, refine: int = 1) -> str:
    return {
        "gt": "aqsep, GT query (true target of each chunk)",
        "mean": "aqsep, class-mean query (single step)",
        "iterative": f"aqsep, iterative ({refine} refinement step{'s' if refine != 1 else ''})",
        "mixture": "reference: mixture as estimate",
        "irm": "reference: oracle IRM (magnitude ratio)",
    }[method]


def check_targets(separator: Separator, targets: Sequence[str], methods: Sequence[str]) -> None:
    """Refuse a target that the model has no class latent for, before any work is done."""
    if not any(m in ("mean", "iterative") for m in methods):
        return
    known = set(separator.classes)
    unknown = [t for t in targets if t.lower() not in known]
    if unknown:
        raise QueryError(
            f"the model has no class latent for {', '.join(unknown)} (needed by the mean and iterative "
            f"modes); it knows: {', '.join(sorted(known)) or 'none'}"
        )
