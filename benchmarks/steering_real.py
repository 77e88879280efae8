"""Models side by side on real voices over real accompaniment, beside Spleeter 2-stems.

Three sets, none of them trained on by any aqsep model:

- **MIR-1K held out**: every ``--every``-th clip of the test singers (``benchmarks/real.py``'s
  set), each voice over its own karaoke accompaniment;
- **real over real**: the same test voices, each over the accompaniment of *another* test clip
  (the clip half the list away, cropped to the shorter), so neither part was heard together;
- **full-band real over real**: the solo voices of ``../shared/data/solo-vocals`` (44.1 kHz), cut
  to the length of the MUSDB18 clip, each over that clip's real accompaniment (its drums, bass
  and other, stereo) at 0 dB;
- **MUSDB18 clip**: the preview clip inside ``stempeg``, the SDR of each of the four classes over
  the whole clip (one figure per class, as the field quotes a clip).

Each model separates with its class means; GNSDR is the length-weighted mean over clips of
SDR(estimate) - SDR(mixture), plain SDR over the whole clip::

    python benchmarks/steering_real.py MODEL [MODEL ...] [--segment S] [--out docs/steering-real.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

import real  # noqa: E402

from aqsep import Separator  # noqa: E402

CLASSES = ("vocals", "drums", "bass", "other")


def real_over_real(clips: list[real.Clip]) -> list[real.Clip]:
    """Each clip's voice over the accompaniment of the clip half the list away."""
    out = []
    half = len(clips) // 2
    for i, clip in enumerate(clips):
        other = clips[(i + half) % len(clips)]
        n = min(clip.voice.shape[1], other.rest.shape[1])
        out.append(
            real.Clip(
                f"{clip.name}+{other.name}", clip.sample_rate, clip.voice[:, :n], other.rest[:, :n]
            )  # fmt: skip
        )
    return out


def solo_over_musdb(solo: Path, stems: dict[str, np.ndarray], rate: int) -> list[real.Clip]:
    """Each solo voice, in pieces as long as the MUSDB18 clip (a last piece of at least half its
    length is kept, cropped), over the clip's accompaniment scaled to the voice's energy."""
    from aqsep.audio import read_audio, resample, to_mono

    acc_all = sum(stems[c] for c in CLASSES if c != "vocals")
    assert isinstance(acc_all, np.ndarray)
    n_clip = acc_all.shape[1]
    out = []
    for path in real.solo_files(solo):
        audio, sr = read_audio(path)
        voice_all = resample(to_mono(audio)[None], sr, rate)[0]
        for start in range(0, voice_all.shape[0], n_clip):
            voice = voice_all[start : start + n_clip]
            if voice.shape[0] < n_clip // 2 or np.mean(voice**2) < 1e-10:
                continue
            n = voice.shape[0]
            acc = acc_all[:, :n] * np.sqrt(np.mean(voice**2) / np.mean(acc_all[:, :n] ** 2))
            two = np.repeat(voice[None], 2, axis=0).astype(np.float32)
            out.append(
                real.Clip(f"{path.stem}@{start / rate:.1f}s", rate, two, acc.astype(np.float32))
            )
    return out


def gnsdr(estimate_of: Any, clips: list[real.Clip]) -> float:
    gains, weights = [], []
    for clip in clips:
        est = estimate_of(clip.mixture, clip.sample_rate)
        gains.append(real.sdr(clip.voice, est) - real.sdr(clip.voice, clip.mixture))
        weights.append(clip.seconds)
    return float(np.average(gains, weights=weights))


def musdb_stems() -> tuple[dict[str, np.ndarray], int]:
    import stempeg

    from aqsep.data.musdb import STEM_IDS

    path = Path(stempeg.__file__).parent / "data" / "The Easton Ellises - Falcon 69.stem.mp4"
    audio, rate = stempeg.read_stems(str(path), dtype=np.float32)
    return {c: np.ascontiguousarray(audio[i].T) for c, i in STEM_IDS.items()}, int(rate)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="released model folders (or 'default')")
    p.add_argument("--mir1k", type=Path, default=ROOT.parent / "shared" / "data" / "mir1k")
    p.add_argument("--every", type=int, default=5, help="every N-th clip of each test singer")
    p.add_argument("--solo", type=Path, default=ROOT.parent / "shared" / "data" / "solo-vocals")
    p.add_argument("--segment", type=float, help="chunk length in seconds (default: the model's)")
    p.add_argument("--no-spleeter", action="store_true", help="leave Spleeter 2-stems out")
    p.add_argument("--out", type=Path, help="write the figures to this JSON file")
    args = p.parse_args(argv)
    by_singer: dict[str, list[real.Clip]] = {}
    for clip in real.mir1k_clips(args.mir1k, False):
        by_singer.setdefault(clip.meta["singer"], []).append(clip)
    mir1k = [c for clips in by_singer.values() for c in clips[:: args.every]]
    mixed = real_over_real(mir1k)
    stems, rate = musdb_stems()
    solo = solo_over_musdb(args.solo, stems, rate)
    mixture = sum(stems.values())
    assert isinstance(mixture, np.ndarray)
    rows: dict[str, dict[str, Any]] = {
        "mixture": {"musdb": {c: real.sdr(stems[c], mixture) for c in CLASSES}}
    }
    methods: list[tuple[str, Any]] = []
    for model in args.models:
        sep = Separator(model, segment=args.segment)
        latents = {c: sep.class_latent(c) for c in CLASSES}

        def of(cls: str, sep: Separator = sep, latents: dict = latents) -> Any:
            return lambda audio, sr: sep.separate(audio, sr, latents[cls])["target"]

        methods.append((model, of))
    if not args.no_spleeter:
        from peer_spleeter import Spleeter2Stems

        peer = Spleeter2Stems()
        methods.append(("Spleeter 2-stems", lambda cls: peer.vocals if cls == "vocals" else None))
    for name, of in methods:
        start = time.perf_counter()
        row: dict[str, Any] = {
            "mir1k": gnsdr(of("vocals"), mir1k),
            "real_over_real": gnsdr(of("vocals"), mixed),
            "fullband_over_musdb": gnsdr(of("vocals"), solo),
            "musdb": {},
        }
        for cls in CLASSES:
            fn = of(cls)
            if fn is not None:
                row["musdb"][cls] = real.sdr(stems[cls], fn(mixture, rate))
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    print(
        f"\n{len(mir1k)} MIR-1K held-out clips, {len(mixed)} real-over-real mixtures, "
        f"{len(solo)} full-band voices over the MUSDB18 clip's accompaniment"
    )
    print(
        "| method | MIR-1K vocals GNSDR | real over real | full-band over MUSDB accompaniment "
        "| MUSDB clip vocals | drums | bass | other |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    vocal_sets = ("mir1k", "real_over_real", "fullband_over_musdb")
    for name, row in rows.items():
        cells = [f"{row[k]:+.2f}" if k in row else "" for k in vocal_sets]
        cells += [f"{row['musdb'][c]:.2f}" if c in row["musdb"] else "" for c in CLASSES]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.out:
        clips = {
            "mir1k": len(mir1k),
            "real_over_real": len(mixed),
            "fullband_over_musdb": len(solo),
        }
        result = {"clips": clips, "segment": args.segment, "rows": rows}
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
