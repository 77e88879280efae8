"""The evaluation loop: every track, method and target separated and scored, resuming from the
per-track files of an interrupted run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aqsep.data.track import Track, TrackAudio
from aqsep.errors import QueryError
from aqsep.evaluate.cache import (
    check_reusable,
    model_fingerprint,
    read_track_json,
    score_file,
    score_header,
    track_json,
    write_track_json,
)
from aqsep.evaluate.methods import METHODS, Progress, check_targets, estimate, method_name
from aqsep.evaluate.scoring import Scores, score
from aqsep.evaluate.tracks import default_targets

if TYPE_CHECKING:
    from aqsep.api import Separator


def evaluate_tracks(
    separator: Separator,
    tracks: Sequence[Track],
    targets: Sequence[str] | None,
    methods: str | Sequence[str],
    *,
    refine: int = 1,
    fast: bool = False,
    out_dir: str | Path | None = None,
    split: str = "test",
    data_id: str = "",
    progress: Progress | None = None,
) -> Scores:
    """Separate and score every track for every method and target.

    Args:
        separator: an :class:`aqsep.api.Separator` (its chunking settings are used).
        tracks: from :func:`list_tracks`.
        targets: target names (coarse classes, fine labels or stem names); None: those of
            :func:`default_targets`. A target absent or silent in a track is skipped there.
        methods: any of ``gt``, ``mean``, ``iterative``, ``mixture``, ``irm``.
        refine: refinement steps of the iterative method.
        fast: score with fast-bss-eval instead of museval.
        out_dir: if given, each (method, track) is written to
            ``out_dir/<method>/<split>/<track>.json`` in museval's format, and a file already there
            is reused instead of recomputed (an interrupted evaluation resumes where it stopped).
        data_id: names the data set in the JSON headers (caches of another data set are refused).
        progress: called with dicts: ``{"stage": "track", "track", "index", "total"}``, then per
            job ``{"stage": "job", "track", "method", "target", "done", "total", "cached"}``, and
            the separator's own ``{"stage": "separate", ...}`` dicts.
    Returns:
        ``scores[method_name][track][target][metric]`` -> framewise values.
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    for m in methods:
        if m not in METHODS:
            raise QueryError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    if refine < 1:
        raise QueryError(f"--refine must be at least 1, got {refine}")
    if not targets:
        targets, unknown = default_targets(separator, tracks, methods)
        if not targets:
            raise QueryError(
                f"the model has no class latent for any class of the data ({', '.join(unknown)}); "
                f"it knows: {', '.join(separator.classes)}"
            )
    targets = list(targets)
    check_targets(separator, targets, methods)
    run = Evaluation(
        separator,
        targets=targets,
        methods=methods,
        refine=refine,
        fast=fast,
        out_dir=None if out_dir is None else Path(out_dir),
        split=split,
        data_id=data_id,
        fingerprint=model_fingerprint(separator),
    )
    scores: Scores = {method_name(m, refine, fast): {} for m in methods}
    notify = progress or (lambda _: None)
    for i, entry in enumerate(tracks):
        notify({"stage": "track", "track": entry.name, "index": i, "total": len(tracks)})
        _evaluate_one(run, entry, scores, notify)
    return scores


@dataclass(frozen=True)
class Evaluation:
    """What every job of one evaluation shares: the checked arguments of
    :func:`evaluate_tracks` and the model's fingerprint."""

    separator: Separator
    targets: Sequence[str]
    methods: Sequence[str]
    refine: int
    fast: bool
    out_dir: Path | None
    split: str
    data_id: str
    fingerprint: str

    def folder(self, method: str) -> str:
        """The method's folder name (:func:`method_name`)."""
        return method_name(method, self.refine, self.fast)

    def header(self, method: str, sample_rate: int) -> dict[str, Any]:
        """The per-track file header of ``method`` (:func:`score_header`)."""
        return score_header(
            self.separator,
            method,
            sample_rate,
            refine=self.refine,
            fast=self.fast,
            split=self.split,
            data_id=self.data_id,
            fingerprint=self.fingerprint,
        )


def _cached(
    run: Evaluation, method: str, path: Path | None
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """The scores of a per-track file already there (a skipped target has ``{}``) and its
    header; nothing where there is none."""
    if path is None or not path.is_file():
        return {}, {}
    have, old = read_track_json(path)
    if old.get("skipped"):
        have.update({t: {} for t in old["skipped"]})
    check_reusable(path, old, run.header(method, old.get("sample_rate", 0)))
    return have, old


def _evaluate_one(run: Evaluation, entry: Track, scores: Scores, notify: Progress) -> None:
    """Every method and target of one track into ``scores``, from its files where they are."""
    track: TrackAudio | None = None
    wanted = [t for t in run.targets if entry.members(t)]
    jobs = len(wanted) * len(run.methods)
    done = 0
    for method in run.methods:
        name = run.folder(method)
        path = None if run.out_dir is None else score_file(run.out_dir, name, run.split, entry.name)
        have, old = _cached(run, method, path)
        todo = [t for t in wanted if t not in have]
        for t in wanted:
            if t in have:
                done += 1
                notify(_job_event(entry.name, name, t, done, jobs, cached=True))
        results = {t: v for t, v in have.items() if v}
        skipped = sorted(t for t, v in have.items() if not v)
        notes: list[str] = list(old.get("notes", []))
        if todo:
            if track is None:
                track = entry.load()
            for t in todo:
                target_audio = track.source(t)
                try:
                    est = (
                        estimate(
                            run.separator,
                            track,
                            t,
                            method,
                            refine=run.refine,
                            notes=notes,
                            progress=_tagged(notify, entry.name, name, t),
                        )
                        if np.any(target_audio)
                        else None  # a stem that is digitally silent all along: nothing to score
                    )
                except QueryError as err:  # GT mode: a target below the silence threshold
                    notes.append(f"{t}: not scored, {err}")
                    est = None
                if est is None:
                    skipped.append(t)
                else:
                    rest = track.mixture - target_audio
                    est_rest = track.mixture if method == "mixture" else None
                    results[t] = score(
                        target_audio, rest, est, track.sample_rate, est_rest=est_rest, fast=run.fast
                    )
                done += 1
                notify(_job_event(entry.name, name, t, done, jobs, cached=False))
            if path is not None:
                header = run.header(method, track.sample_rate)
                if skipped:
                    header["skipped"] = sorted(set(skipped))
                if notes:
                    header["notes"] = notes
                write_track_json(path, track_json(entry.name, results, header))
        scores[name][entry.name] = {t: v for t, v in results.items() if t in wanted}


def _job_event(
    track: str, method: str, target: str, done: int, total: int, *, cached: bool
) -> dict[str, Any]:
    """Progress event: one (track, method, target) job finished, or found in the cache."""
    return {
        "stage": "job",
        "track": track,
        "method": method,
        "target": target,
        "done": done,
        "total": total,
        "cached": cached,
    }


def _tagged(notify: Progress, track: str, method: str, target: str) -> Progress:
    def forward(info: dict) -> None:
        notify({**info, "track": track, "method": method, "target": target})

    return forward
