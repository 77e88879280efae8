"""The class mean latents of a released model, computed on its training data."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from aqsep.config import SILENCE_DB
from aqsep.data.stems import Track
from aqsep.model import QuerySeparator
from aqsep.query import LatentMeans
from aqsep.release import ClassLatent


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
