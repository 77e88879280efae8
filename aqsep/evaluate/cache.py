"""Per-track score files in museval's JSON format, with an ``"aqsep"`` header saying how the
numbers were made; a file made with other settings (or another model) is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aqsep.audio import write_text_atomic
from aqsep.errors import DataError
from aqsep.evaluate.methods import MODES
from aqsep.evaluate.scoring import FAST_LABEL, METRICS, MUSEVAL_LABEL, WINDOW_SECONDS
from aqsep.inference import native_grid

if TYPE_CHECKING:
    from aqsep.api import Separator


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


def score_header(
    separator: Separator,
    method: str,
    sample_rate: int,
    *,
    refine: int,
    fast: bool,
    split: str,
    data_id: str,
    fingerprint: str,
) -> dict[str, Any]:
    """The ``"aqsep"`` header of a per-track file: how its numbers were made."""
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


#: The header entries that must match for a per-track file to be reused.
CHECKED_KEYS = (
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


def check_reusable(path: Path, old: dict[str, Any], mine: dict[str, Any]) -> None:
    """Refuse a per-track file whose header ``old`` differs from ``mine`` (:data:`CHECKED_KEYS`).

    Raises:
        DataError: naming the file and the settings that differ.
    """
    diff = [k for k in CHECKED_KEYS if old.get(k) != mine.get(k)]
    if diff:
        raise DataError(
            f"{path} was made with other settings ({', '.join(diff)} differ): use another "
            "output folder, or delete it to recompute"
        )


def score_file(out_dir: str | Path, method_folder: str, split: str, track: str) -> Path:
    """``out_dir/<method>/<split>/<track>.json``, the track's name made safe for a file name."""
    return Path(out_dir) / method_folder / split / f"{_safe(track)}.json"


def write_track_json(path: Path, payload: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(payload, indent=1))


def _safe(name: str) -> str:
    return "".join(ch if ch not in '/\\:*?"<>|' else "_" for ch in name)
