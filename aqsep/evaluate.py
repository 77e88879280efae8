"""Scoring separations with the field's protocol, and the tables that summarise them.

Protocol (SiSEC 2018, docs/paper.md section 8): BSSEval v4 through ``museval`` with 1 s windows
and a 1 s hop at the data's own sample rate and channel count; the median over a track's frames,
then the median over tracks, per target. Frames where a reference or an estimate is digitally
silent are NaN (museval's rule) and left out of the medians.

**Target vs rest.** BSSEval needs the estimates of all sources of a mixture at once to tell
interference (SIR) from artifacts (SAR). A query model separates one target at a time, so each
target is scored as a two-source problem: references ``(true target, true rest)``, estimates
``(target estimate, mixture - target estimate)``. The target's row is what is reported. Its
SDR does not depend on how the rest is split into stems; its SIR counts everything that is not the
target as interference. Numbers are therefore comparable with each other and with SiSEC-style
tables for SDR, while SIR/SAR of a four-source evaluation may differ.

**Tracks** come from the data layer (:mod:`aqsep.data`: stems folders, MUSDB18, MIR-1K, and its
one split rule), read whole at their own rate and channels (:meth:`aqsep.data.track.Track.load`).
**The mixture is the sum of the stems** for every data set (the MUSDB18 preview clip in
``stempeg`` ships a mixture 17 % away from that sum; scoring against stems that do not add up to
the input would blame the model for the mastering; MIR-1K's is accompaniment + voice, mono).
Tracks that a model was trained on can be found from its metadata (:func:`trained_on`) and are
refused by the command line unless allowed.

Methods (one folder of per-track JSON files each, in museval's format):

- ``gt``: each chunk's query is the true target of the same chunk (the paper's upper bound), one
  latent per chunk; a chunk where the target is silent takes the whole target's latent;
- ``mean``: the class mean latent stored with the model ("separation without a query");
- ``iterative``: the class mean, then the estimate re-encoded ``refine`` times (paper section 7.4);
- ``mixture`` (reference): the mixture itself as the estimate of every source;
- ``irm`` (reference): the oracle ideal ratio mask ``|T| / (|T| + |R|)`` (magnitude ratio, SiSEC's
  "IRM1") computed from the true stems on the STFT grid the model's separation uses at the data's
  rate (:func:`aqsep.inference.native_grid`) and applied to the mixture with its phase.

``fast=True`` scores with ``fast_bss_eval`` (torch backend; BSSEval v3-style filters fitted per
1 s frame, channels concatenated in time, no ISR) instead of museval: quick, for validation, and
labelled as such in every output.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aqsep.audio import write_text_atomic
from aqsep.data import DataSource
from aqsep.data.track import SPLITS, Track, TrackAudio
from aqsep.errors import DataError, QueryError
from aqsep.inference import native_grid
from aqsep.query import encode_clip
from aqsep.transforms import istft, stft

if TYPE_CHECKING:
    from aqsep.api import Separator

METRICS = ("SDR", "SIR", "SAR", "ISR")
MODES = ("gt", "mean", "iterative")
REFERENCE_METHODS = ("mixture", "irm")
METHODS = MODES + REFERENCE_METHODS
WINDOW_SECONDS = 1.0  # SiSEC 2018: 1 s windows, 1 s hop
MUSEVAL_LABEL = "museval (BSSEval v4, 1 s windows)"
FAST_LABEL = "fast-bss-eval (torch, per-frame filters, 1 s windows) -- validation only, not museval"

Progress = Callable[[dict], None]
# method -> track -> target -> metric -> framewise values
Scores = dict[str, dict[str, dict[str, dict[str, np.ndarray]]]]


# ---- tracks ---------------------------------------------------------------------------------------
def list_tracks(
    data: str | Path,
    *,
    split: str = "test",
    musdb: bool = False,
    is_wav: bool = False,
    max_tracks: int | None = None,
) -> list[Track]:
    """The tracks of one split of a data set, sorted by name, listed through :mod:`aqsep.data`.

    Args:
        data: ``[KIND:]PATH`` (:meth:`aqsep.data.DataSource.parse`): a stems folder (such as
            the synthetic corpus), MIR-1K, a MUSDB18 root, or one ``.stem.mp4`` file. Every stem
            file is a stem; targets match a stem's name, fine label or coarse class.
        split: ``test``, ``train`` or ``valid``, by the rule of :mod:`aqsep.data`.
        musdb, is_wav: read ``data`` as MUSDB18 (``is_wav``: MUSDB18-HQ).
        max_tracks: keep the first N tracks.

    Raises:
        DataError: the split has no track (the message says why, e.g. a folder without split
            folders, whose tracks are training tracks).
    """
    source = DataSource.parse(str(data), musdb=musdb, is_wav=is_wav)
    path = Path(source.path)
    if not path.exists():
        raise DataError(f"data path {path} does not exist")
    if path.is_file() and source.kind != "musdb":
        raise DataError(
            f"{path} is a file: give a data set folder (stems, MIR-1K, MUSDB18) or one .stem.mp4"
        )
    tracks = source.open(split, level="stems")
    if not tracks:
        raise DataError(f"no {split} tracks in {source}{_why_empty(source, split)}")
    return tracks[:max_tracks] if max_tracks else tracks


def _why_empty(source: DataSource, split: str) -> str:
    if split == "train" or source.kind not in ("stems", "musdb", "musdb-hq"):
        return ""
    others = [s for s in SPLITS if s != split and source.track_paths(s)]
    if not others:
        return ""
    return (
        f": it holds {' and '.join(others)} tracks only (a folder without train/valid/test "
        "folders holds training tracks, unless it is itself named train, valid or test); "
        f"give the folder of the {split} tracks, or another split"
    )


def trained_on(separator: Separator, tracks: Sequence[Track]) -> list[Track]:
    """The tracks that the model was trained on: those in the training split of a data set
    that its metadata names (``"data"``: ``[KIND:]PATH`` strings), compared by resolved path.

    A data set that is not on this machine (or a free-text description) cannot be compared and
    is passed over.
    """
    metadata = separator.released.metadata
    data = metadata.get("data") if isinstance(metadata, dict) else None  # edited by hand: any
    seen: set[Path] = set()
    for text in [data] if isinstance(data, str) else data if isinstance(data, list) else []:
        try:
            source = DataSource.parse(str(text))
            if Path(source.path).exists():
                seen.update(p.resolve() for p in source.track_paths("train"))
        except (DataError, OSError):
            continue
    return [t for t in tracks if Path(t.path).resolve() in seen]


def check_held_out(separator: Separator, tracks: Sequence[Track], data: str) -> None:
    """Refuse tracks that the model was trained on (:func:`trained_on`): their scores would
    not measure separation of unheard music.

    Raises:
        DataError: naming how many tracks and an example.
    """
    seen = trained_on(separator, tracks)
    if seen:
        raise DataError(
            f"{len(seen)} of the {len(tracks)} tracks of {data} are training tracks of this model "
            f"(e.g. {seen[0].name}): their scores would not measure separation of unheard music; "
            "evaluate on its test split, or allow training tracks explicitly"
        )


def coarse_targets(tracks: Sequence[Track]) -> list[str]:
    """The coarse classes present in any of the tracks."""
    return sorted({c for t in tracks for c in t.classes("coarse")})


def default_targets(
    separator: Separator, tracks: Sequence[Track], methods: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The targets when none are given: every coarse class of the data, less (returned second)
    those the model has no class latent for when a method needs one (MIR-1K's
    ``accompaniment``, say)."""
    present = coarse_targets(tracks)
    if not any(m in ("mean", "iterative") for m in methods):
        return present, []
    known = set(separator.classes)
    return [t for t in present if t in known], [t for t in present if t not in known]


# ---- estimates ------------------------------------------------------------------------------------
def gt_latents(separator: Separator, reference: np.ndarray, sample_rate: int) -> torch.Tensor:
    """GT mode: one latent per chunk of the separation, ``(chunks, latent_dim)``, each the query
    latent of the true target in that chunk (:func:`aqsep.query.encode_clip`).

    A chunk where the target is below the silence threshold takes the latent of the whole true
    target. Raises :class:`QueryError` if the whole target is below it.
    """
    plan = separator.chunk_plan(reference.shape[1], sample_rate)
    whole: torch.Tensor | None = None
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
    return torch.stack(latents)


def model_latent(
    separator: Separator,
    track: TrackAudio,
    target: str,
    mode: str,
    refine: int = 1,
    notes: list[str] | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """The latent(s) that ``mode`` gives for ``target`` on ``track`` (see the module docstring):
    ``(latent_dim,)``, or ``(chunks, latent_dim)`` in GT mode.

    In iterative mode an estimate too quiet to re-encode keeps the class mean; that is recorded
    in ``notes``.
    """
    if mode == "gt":
        return gt_latents(separator, track.source(target), track.sample_rate)
    z = separator.class_latent(target)
    if mode == "mean":
        return z
    if mode == "iterative":
        try:
            return separator.refine(
                (track.mixture, track.sample_rate), z, steps=refine, progress=progress
            )
        except QueryError as err:
            if notes is not None:
                notes.append(
                    f"{target}: kept the class mean, the estimate could not be re-encoded ({err})"
                )
            return z
    raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")


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


# ---- scoring --------------------------------------------------------------------------------------
def score(
    target: np.ndarray,
    rest: np.ndarray,
    est: np.ndarray,
    sample_rate: int,
    *,
    est_rest: np.ndarray | None = None,
    fast: bool = False,
) -> dict[str, np.ndarray]:
    """Framewise metrics of a target estimate, scored as target vs rest (module docstring).

    Args:
        target, rest: true target and true rest, ``(channels, samples)``.
        est: target estimate, same shape.
        est_rest: estimate of the rest (default: ``target + rest - est``).
    Returns:
        ``{"SDR", "SIR", "SAR", "ISR"}`` -> ``(frames,)`` arrays (NaN for silent frames).
    """
    if est.shape != target.shape:
        raise ValueError(f"estimate shape {est.shape} differs from reference shape {target.shape}")
    if est_rest is None:
        est_rest = target + rest - est
    refs = np.stack([target, rest]).astype(np.float64)
    ests = np.stack([est, est_rest]).astype(np.float64)
    win = round(WINDOW_SECONDS * sample_rate)
    if fast:
        return _score_fast(refs, ests, win)
    import museval
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    # museval solves small (<= 2048 x 2048) systems: multi-threaded BLAS is slower than one
    # thread for them (measured 4x on a 2-core machine).
    with threadpool_limits(limits=1, user_api="blas"):
        sdr, isr, sir, sar = museval.evaluate(
            refs.transpose(0, 2, 1),
            ests.transpose(0, 2, 1),
            win=win,
            hop=win,
            mode="v4",
            padding=False,
        )
    return {
        "SDR": _clean(sdr[0]),
        "SIR": _clean(sir[0]),
        "SAR": _clean(sar[0]),
        "ISR": _clean(isr[0]),
    }


def _clean(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).copy()
    x[~np.isfinite(x)] = np.nan
    return x


def _score_fast(refs: np.ndarray, ests: np.ndarray, win: int) -> dict[str, np.ndarray]:
    import fast_bss_eval

    n = refs.shape[-1]
    nwin = 1 if win >= n else (n - win) // win + 1  # museval's framing: full windows only
    frames_r, frames_e = [], []
    for i in range(nwin):
        sl = slice(i * win, min(i * win + win, n))
        frames_r.append(refs[:, :, sl].reshape(2, -1))  # channels concatenated in time
        frames_e.append(ests[:, :, sl].reshape(2, -1))
    r, e = torch.from_numpy(np.stack(frames_r)), torch.from_numpy(np.stack(frames_e))
    silent = (r.abs().sum(-1) == 0).any(-1) | (e.abs().sum(-1) == 0).any(-1)
    out = {m: np.full(nwin, np.nan) for m in METRICS}
    keep = (~silent).nonzero().flatten()
    if len(keep):
        sdr, sir, sar = fast_bss_eval.bss_eval_sources(r[keep], e[keep], compute_permutation=False)
        for name, v in (("SDR", sdr), ("SIR", sir), ("SAR", sar)):
            out[name][keep.numpy()] = _clean(v[:, 0].numpy())
    return out


# ---- per-track JSON (museval's format) ------------------------------------------------------------
def model_fingerprint(separator: Separator) -> str:
    """A short hash of the model's weights and class latents (caches from another model are refused)."""
    released = separator.released
    h = hashlib.sha256()
    folder = getattr(released, "path", None)
    if folder is not None and (Path(folder) / "model.safetensors").is_file():
        for name in ("model.safetensors", "classes.json"):
            p = Path(folder) / name
            if p.is_file():
                h.update(p.read_bytes())
    else:
        for k, v in sorted(released.model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
        h.update(json.dumps({k: c.latent for k, c in sorted(released.classes.items())}).encode())
    return h.hexdigest()[:16]


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


def track_json(
    track: str, per_target: dict[str, dict[str, np.ndarray]], header: dict[str, Any]
) -> dict[str, Any]:
    """museval's per-track JSON (``{"targets": [{"name", "frames": [...]}], "museval_version"}``)
    plus an ``"aqsep"`` section describing how the numbers were made."""
    import museval.version

    targets = []
    for name, metrics in per_target.items():
        n = len(metrics["SDR"])
        frames = [
            {
                "time": i * WINDOW_SECONDS,
                "duration": WINDOW_SECONDS,
                "metrics": {m: _q(metrics[m][i]) for m in METRICS},
            }
            for i in range(n)
        ]
        targets.append({"name": name, "frames": frames})
    return {
        "targets": targets,
        "museval_version": museval.version._version,
        "track": track,
        "aqsep": header,
    }


def _q(x: float) -> float:
    return float("nan") if not np.isfinite(x) else round(float(x), 5)


def read_track_json(path: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """The scores ``{target: {metric: per-frame values}}`` and the ``"aqsep"`` header of a
    per-track file (:func:`track_json`).

    Raises:
        DataError: the file is not one (corrupt, cut short, edited), naming it.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        out = {}
        for t in raw.get("targets", []):
            out[str(t["name"])] = {
                m: np.array(
                    [float(f["metrics"].get(m, np.nan)) for f in t["frames"]], dtype=np.float64
                )
                for m in METRICS
            }
        header = raw.get("aqsep", {})
        if not isinstance(header, dict):
            raise TypeError("its 'aqsep' entry is not an object")
    except (ValueError, TypeError, KeyError, AttributeError) as err:  # JSON and UTF-8 errors too
        raise DataError(
            f"{path}: not a per-track score file aqsep can read ({type(err).__name__}: "
            f"{str(err)[:80]}); delete it to recompute the track"
        ) from None
    return out, header


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(payload, indent=1))


# ---- the evaluation loop --------------------------------------------------------------------------
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
    fingerprint = model_fingerprint(separator)
    scores: Scores = {method_name(m, refine, fast): {} for m in methods}
    notify = progress or (lambda _: None)
    for i, entry in enumerate(tracks):
        notify({"stage": "track", "track": entry.name, "index": i, "total": len(tracks)})
        _evaluate_one(
            separator,
            entry,
            targets,
            methods,
            refine,
            fast,
            out_dir,
            split,
            data_id,
            fingerprint,
            scores,
            notify,
        )
    return scores


def _header(
    separator: Separator,
    method: str,
    refine: int,
    fast: bool,
    split: str,
    data_id: str,
    fingerprint: str,
    sample_rate: int,
) -> dict[str, Any]:
    h: dict[str, Any] = {
        "method": method,
        "backend": FAST_LABEL if fast else MUSEVAL_LABEL,
        "scoring": "target vs rest (2-source BSSEval; rest estimate = mixture - target estimate)",
        "split": split,
        "data": data_id,
        "sample_rate": sample_rate,
        "window_s": WINDOW_SECONDS,
    }
    if method in MODES:
        h.update(model=fingerprint, segment=separator.segment, overlap=separator.overlap)
        if method == "iterative":
            h["refine"] = refine
    if method == "irm":
        h["stft"] = list(native_grid(separator.model, sample_rate))
    return h


_CHECKED_KEYS = (
    "method",
    "backend",
    "split",
    "data",
    "model",
    "segment",
    "overlap",
    "refine",
    "stft",
)


def _evaluate_one(
    separator: Separator,
    entry: Track,
    targets: Sequence[str],
    methods: Sequence[str],
    refine: int,
    fast: bool,
    out_dir: str | Path | None,
    split: str,
    data_id: str,
    fingerprint: str,
    scores: Scores,
    notify: Progress,
) -> None:
    track: TrackAudio | None = None
    wanted = [t for t in targets if entry.members(t)]
    jobs = len(wanted) * len(methods)
    done = 0
    for method in methods:
        name = method_name(method, refine, fast)
        path = (
            Path(out_dir) / name / split / f"{_safe(entry.name)}.json"
            if out_dir is not None
            else None
        )
        have: dict[str, dict[str, np.ndarray]] = {}
        old: dict[str, Any] = {}
        if path is not None and path.is_file():
            have, old = read_track_json(path)
            if old.get("skipped"):
                have.update({t: {} for t in old["skipped"]})
            sr = old.get("sample_rate", 0)
            mine = _header(separator, method, refine, fast, split, data_id, fingerprint, sr)
            diff = [k for k in _CHECKED_KEYS if old.get(k) != mine.get(k)]
            if diff:
                raise DataError(
                    f"{path} was made with other settings ({', '.join(diff)} differ): use another "
                    "output folder, or delete it to recompute"
                )
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
                            separator,
                            track,
                            t,
                            method,
                            refine=refine,
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
                        target_audio, rest, est, track.sample_rate, est_rest=est_rest, fast=fast
                    )
                done += 1
                notify(_job_event(entry.name, name, t, done, jobs, cached=False))
            if path is not None:
                header = _header(
                    separator, method, refine, fast, split, data_id, fingerprint, track.sample_rate
                )
                if skipped:
                    header["skipped"] = sorted(set(skipped))
                if notes:
                    header["notes"] = notes
                _write_json_atomic(path, track_json(entry.name, results, header))
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


def _safe(name: str) -> str:
    return "".join(ch if ch not in '/\\:*?"<>|' else "_" for ch in name)


# ---- summaries ------------------------------------------------------------------------------------
def track_medians(scores: Scores) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Median over frames: ``[method][track][target][metric]`` -> float (NaN if no valid frame)."""
    return {
        m: {
            tr: {t: {k: _nanmedian(v) for k, v in met.items()} for t, met in per.items()}
            for tr, per in by_track.items()
        }
        for m, by_track in scores.items()
    }


def _nanmedian(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else math.nan


@dataclass
class SummaryRow:
    method: str
    target: str
    SDR: float
    SIR: float
    SAR: float
    tracks: int  # tracks with at least one scored frame


def summarize(scores: Scores) -> list[SummaryRow]:
    """Median over frames, then median over tracks, per method and target."""
    rows = []
    for method, by_track in track_medians(scores).items():
        targets = sorted({t for per in by_track.values() for t in per})
        for t in targets:
            vals = {
                k: np.array([per[t][k] for per in by_track.values() if t in per])
                for k in ("SDR", "SIR", "SAR")
            }
            n = int(np.isfinite(vals["SDR"]).sum())
            rows.append(
                SummaryRow(
                    method,
                    t,
                    _nanmedian(vals["SDR"]),
                    _nanmedian(vals["SIR"]),
                    _nanmedian(vals["SAR"]),
                    tracks=n,
                )
            )
    return rows


def _fmt(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.2f}"


def summary_markdown(
    rows: Sequence[SummaryRow],
    *,
    fast: bool = False,
    refine: int = 1,
    dataset: str = "",
    title: str = "Evaluation",
) -> str:
    backend = FAST_LABEL if fast else MUSEVAL_LABEL
    lines = [
        f"# {title}",
        "",
        f"Data: {dataset}. Scores: {backend}; median over 1 s frames, then median over tracks.",
        "Each target is scored as target vs rest (a 2-source BSSEval problem; rest estimate = "
        "mixture - target estimate; the mixture is the sum of the stems).",
        "",
        "| method | target | SDR | SIR | SAR | tracks |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = r.method.removesuffix("-fast")
        m = "iterative" if base.startswith("iterative") else base
        steps = int(base[len("iterative") :] or 1) if m == "iterative" else refine
        label = method_label(m, steps) if m in METHODS else r.method
        lines.append(
            f"| {label} | {r.target} | {_fmt(r.SDR)} | {_fmt(r.SIR)} | {_fmt(r.SAR)} | {r.tracks} |"
        )
    return "\n".join(lines) + "\n"


def write_summary(
    rows: Sequence[SummaryRow],
    out_dir: str | Path,
    *,
    fast: bool = False,
    refine: int = 1,
    dataset: str = "",
    title: str = "Evaluation",
    stem: str = "summary",
) -> tuple[Path, Path]:
    """``summary.md`` and ``summary.csv`` in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    md = out / f"{stem}.md"
    write_text_atomic(
        md, summary_markdown(rows, fast=fast, refine=refine, dataset=dataset, title=title)
    )
    path = out / f"{stem}.csv"
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(["method", "target", "SDR", "SIR", "SAR", "tracks", "backend", "dataset"])
    for r in rows:
        w.writerow(
            [
                r.method,
                r.target,
                f"{r.SDR:.4f}",
                f"{r.SIR:.4f}",
                f"{r.SAR:.4f}",
                r.tracks,
                FAST_LABEL if fast else MUSEVAL_LABEL,
                dataset,
            ]
        )
    write_text_atomic(path, table.getvalue(), newline="")
    return md, path
