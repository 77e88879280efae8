#!/usr/bin/env python3
"""Make the bundled example (aqsep/examples/) from the test split of a corpus built by `aqsep synth`.

    aqsep synth --out corpus --hours 4 --seed 0 --jobs 2
    python scripts/make_example.py --corpus corpus --seed 0

Writes, as 16-bit mono WAV at the corpus rate (22.05 kHz), all small:

    mixture.wav        an excerpt of a test track that has vocals, drums, bass and other
    true_<class>.wav   the stems of that excerpt summed per coarse class (vocals, drums, bass);
                       "other" is mixture.wav minus the three (the files are exact int16 sums)
    query_<class>.wav  a few seconds of one coarse class, taken from a DIFFERENT test track and
                       piece (so the query is not the answer): drums, vocals and bass
    metadata.json      where every file comes from (corpus, tracks, offsets, labels), the time
                       range of the mixture used by the example's --query-range, and the command
                       that rebuilds the example

How the material is chosen (deterministic for a corpus and a seed):
  * mixture: among test tracks with all four coarse classes, every excerpt start on a 0.5 s grid
    where each class is present (at least `--min-class-db` relative to the mixture) is scored by
    how strongly one class (vocals, drums or bass) dominates some `--range-seconds` range of it;
    the best one wins. That range is the example's --query-range.
  * queries: a test track of another piece, drawn with the seed among those where every query
    class plays; for each class, the clip of `--query-seconds` with the most evenly active sound.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aqsep.data.synth import (  # noqa: E402
    COARSE_CLASSES,
    list_tracks,
    read_corpus_metadata,
    read_track_metadata,
)

QUERY_CLASSES = ("drums", "vocals", "bass")
TRUE_CLASSES = ("vocals", "drums", "bass")  # "other" = mixture minus these
RANGE_CLASSES = ("vocals", "drums", "bass")  # one instrument family, not the "other" mix
GRID = 0.5  # seconds between candidate offsets


def level_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.asarray(x, dtype=np.float64) ** 2) + 1e-20))


def load_classes(
    track: Path,
) -> tuple[dict[str, np.ndarray], dict[str, list[str]], dict[str, Any], int]:
    """Per coarse class: the int32 sum of its int16 stems, and the stems' fine labels."""
    meta = read_track_metadata(track)
    sums: dict[str, np.ndarray] = {}
    fine: dict[str, list[str]] = {}
    sr = 0
    for stem, info in meta["stems"].items():
        x, sr = sf.read(track / f"{stem}.wav", dtype="int16", always_2d=True)
        x = x[:, 0].astype(np.int32)
        coarse = info["coarse"]
        sums[coarse] = sums[coarse] + x if coarse in sums else x
        fine.setdefault(coarse, []).append(f"{stem} ({info['fine']})")
    return sums, fine, meta, sr


def frame_energy(x: np.ndarray, hop: int) -> np.ndarray:
    """Energy of consecutive blocks of ``hop`` samples."""
    n = len(x) // hop
    return (x[: n * hop].astype(np.float64) ** 2).reshape(n, hop).sum(axis=1)


def best_excerpt(
    sums: dict[str, np.ndarray], sr: int, seconds: float, range_seconds: float, min_class_db: float
) -> dict[str, Any] | None:
    """The excerpt (and range inside it) where one class dominates most, all four classes present."""
    hop = round(GRID * sr)
    mix = sum(sums.values())
    e_mix = frame_energy(mix, hop)
    e_cls = {c: frame_energy(sums[c], hop) for c in COARSE_CLASSES}
    n_ex, n_rng = round(seconds / GRID), round(range_seconds / GRID)
    best: dict[str, Any] | None = None
    for s in range(0, len(e_mix) - n_ex + 1):
        mix_ex = e_mix[s : s + n_ex].sum()
        if mix_ex <= 0 or any(
            10 * np.log10(e_cls[c][s : s + n_ex].sum() / mix_ex + 1e-20) < min_class_db
            for c in COARSE_CLASSES
        ):
            continue
        for r in range(s, s + n_ex - n_rng + 1):
            total = sum(e_cls[c][r : r + n_rng].sum() for c in COARSE_CLASSES)
            for c in RANGE_CLASSES:
                share = e_cls[c][r : r + n_rng].sum() / total
                if best is None or share > best["share"] + 1e-9:
                    best = {
                        "start": s * GRID,
                        "range": ((r - s) * GRID, (r - s + n_rng) * GRID),
                        "class": c,
                        "share": float(share),
                    }
    return best


def best_clip(x: np.ndarray, sr: int, seconds: float) -> tuple[float, float]:
    """Offset (s) of the clip whose quietest 0.5 s block is loudest, and that block's level (dBFS)."""
    hop = round(GRID * sr)
    e = frame_energy(x, hop) / hop / 32768.0**2
    n = round(seconds / GRID)
    best_s, best_db = 0, -np.inf
    for s in range(0, len(e) - n + 1):
        quietest = 10 * np.log10(e[s : s + n].min() + 1e-20)
        if quietest > best_db + 1e-9:
            best_s, best_db = s, quietest
    return best_s * GRID, float(best_db)


def write_int16(path: Path, x: np.ndarray, sr: int) -> None:
    if np.abs(x).max() > 32767:
        raise SystemExit(f"{path.name}: the int16 sum clips; lower the level of the source tracks")
    sf.write(path, x.astype(np.int16), sr, subtype="PCM_16")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--corpus", required=True, type=Path, help="a corpus built by `aqsep synth`"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "aqsep" / "examples", help="output folder"
    )
    parser.add_argument("--seed", type=int, default=0, help="picks the query track (default 0)")
    parser.add_argument(
        "--seconds", type=float, default=8.0, help="mixture excerpt length (default 8)"
    )
    parser.add_argument(
        "--query-seconds", type=float, default=3.0, help="query clip length (default 3)"
    )
    parser.add_argument(
        "--range-seconds",
        type=float,
        default=3.0,
        help="length of the mixture range used as a query (default 3)",
    )
    parser.add_argument(
        "--min-class-db",
        type=float,
        default=-15.0,
        help="each class's level in the excerpt, relative to the mixture (default -15)",
    )
    parser.add_argument(
        "--max-bytes", type=int, default=2_000_000, help="size limit of all files (default 2 MB)"
    )
    args = parser.parse_args(argv)

    corpus_meta = read_corpus_metadata(args.corpus)
    tracks = list_tracks(args.corpus, "test")
    if not tracks:
        raise SystemExit(f"{args.corpus}: no complete test tracks")

    # ---- the mixture excerpt ------------------------------------------------------------------
    loaded = {}
    candidates = []
    for t in tracks:
        sums, fine, meta, sr = load_classes(t)
        if set(sums) != set(COARSE_CLASSES):
            continue
        loaded[t.name] = (sums, fine, meta, sr)
        found = best_excerpt(sums, sr, args.seconds, args.range_seconds, args.min_class_db)
        if found is not None:
            candidates.append((found["share"], t.name, found))
    if not candidates:
        raise SystemExit("no test track has an excerpt with all four classes; lower --min-class-db")
    candidates.sort(key=lambda c: (-c[0], c[1]))
    _, mix_name, choice = candidates[0]
    sums, fine, mix_meta, sr = loaded[mix_name]
    a, n = round(choice["start"] * sr), round(args.seconds * sr)
    excerpt = {c: sums[c][a : a + n] for c in COARSE_CLASSES}
    mixture = sum(excerpt.values())

    # ---- the query track: another test track, of another piece --------------------------------
    rng = np.random.default_rng(args.seed)
    q_candidates = []
    for t in tracks:
        if t.name == mix_name:
            continue
        meta = read_track_metadata(t)
        if meta.get("piece") == mix_meta.get("piece"):
            continue
        coarse = {info["coarse"] for info in meta["stems"].values()}
        if set(QUERY_CLASSES) <= coarse:
            q_candidates.append(t)
    if not q_candidates:
        raise SystemExit("no other test track (of another piece) has drums, vocals and bass")
    q_track = q_candidates[int(rng.integers(len(q_candidates)))]
    q_sums, q_fine, q_meta, q_sr = load_classes(q_track)
    if q_sr != sr:
        raise SystemExit(f"{q_track.name} is at {q_sr} Hz but {mix_name} at {sr} Hz")

    # ---- write ----------------------------------------------------------------------------------
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.wav"):
        old.unlink()
    files: dict[str, dict[str, Any]] = {}

    def record(name: str, x: np.ndarray, **info: Any) -> None:
        path = out / name
        write_int16(path, x, sr)
        files[name] = {
            "seconds": round(len(x) / sr, 3),
            "level_dbfs": round(level_db(x / 32768.0), 2),
            **info,
        }

    record(
        "mixture.wav",
        mixture,
        role="mixture",
        track=mix_name,
        offset_seconds=choice["start"],
        classes={c: fine[c] for c in COARSE_CLASSES},
    )
    for c in TRUE_CLASSES:
        record(
            f"true_{c}.wav",
            excerpt[c],
            role="reference",
            coarse=c,
            stems=fine[c],
            track=mix_name,
            offset_seconds=choice["start"],
        )
    queries = {}
    for c in QUERY_CLASSES:
        offset, quietest = best_clip(q_sums[c], sr, args.query_seconds)
        b = round(offset * sr)
        name = f"query_{c}.wav"
        record(
            name,
            q_sums[c][b : b + round(args.query_seconds * sr)],
            role="query",
            coarse=c,
            stems=q_fine[c],
            track=q_track.name,
            offset_seconds=offset,
            quietest_half_second_dbfs=round(quietest, 1),
        )
        queries[c] = name

    total = sum((out / name).stat().st_size for name in files)
    if total > args.max_bytes:
        raise SystemExit(f"the example takes {total} bytes, over --max-bytes {args.max_bytes}")
    for name in files:
        files[name]["bytes"] = (out / name).stat().st_size
        files[name]["sha256"] = sha256(out / name)

    r0, r1 = choice["range"]
    shares = {}
    ra, rb = round(r0 * sr), round(r1 * sr)
    energies = {c: float(np.sum(excerpt[c][ra:rb].astype(np.float64) ** 2)) for c in COARSE_CLASSES}
    shares = {c: round(energies[c] / sum(energies.values()), 3) for c in COARSE_CLASSES}
    corpus_keys = (
        "generator",
        "format",
        "seed",
        "hours",
        "sample_rate",
        "track_seconds",
        "n_tracks",
        "soundfont_plan",
        "synthetic_voice_note",
    )
    metadata = {
        "description": (
            "Bundled example of aqsep: a mixture excerpt of a synthesized test track, the "
            "true stems of that excerpt per coarse class, and query clips from another test "
            "track and piece. Rendered from General MIDI soundfonts; the 'vocals' class is "
            "synthetic voice (voice-like patches, no sung text)."
        ),
        "rebuild": [
            "aqsep synth --out corpus --hours {:g} --seed {} --jobs 2".format(
                corpus_meta.get("hours"), corpus_meta.get("seed")
            ),
            "python scripts/make_example.py --corpus corpus "
            + shlex.join(
                [
                    f"--seed={args.seed}",
                    f"--seconds={args.seconds:g}",
                    f"--query-seconds={args.query_seconds:g}",
                    f"--range-seconds={args.range_seconds:g}",
                    f"--min-class-db={args.min_class_db:g}",
                ]
            ),
        ],
        "rebuild_note": (
            "the corpus's split and its test soundfont depend on the soundfonts installed "
            "(see corpus.soundfont_plan); the test split uses only the soundfont inside the "
            "pretty_midi wheel when Debian soundfonts are installed for train/valid"
        ),
        "corpus": {k: corpus_meta[k] for k in corpus_keys if k in corpus_meta},
        "seed": args.seed,
        "sample_rate": sr,
        "channels": 1,
        "mixture": {
            "file": "mixture.wav",
            "track": mix_name,
            "split": "test",
            "piece": mix_meta.get("piece"),
            "soundfont": mix_meta.get("soundfont"),
            "offset_seconds": choice["start"],
            "seconds": args.seconds,
            "references": {c: f"true_{c}.wav" for c in TRUE_CLASSES},
            "other": "mixture.wav minus the true_*.wav files (exact: all are int16 sums of int16 stems)",
        },
        "query_range": {
            "start": r0,
            "end": r1,
            "dominant_class": choice["class"],
            "energy_shares": shares,
            "note": (
                f"seconds of mixture.wav; no instrument plays alone in this synthetic mix, so this is "
                f"the range where one class dominates most ({choice['class']}: "
                f"{100 * shares[choice['class']]:.0f} % of the energy): the query is still a mix"
            ),
        },
        "queries": {
            "track": q_track.name,
            "split": "test",
            "piece": q_meta.get("piece"),
            "soundfont": q_meta.get("soundfont"),
            "files": queries,
        },
        "files": files,
        "total_bytes": total,
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=1) + "\n")
    print(
        f"{mix_name} ({mix_meta.get('piece')}) {choice['start']:g}-{choice['start'] + args.seconds:g} s; "
        f"queries from {q_track.name} ({q_meta.get('piece')}); range {r0:g}:{r1:g} s "
        f"({choice['class']} {100 * shares[choice['class']]:.0f} %); {total / 1e6:.2f} MB in {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
