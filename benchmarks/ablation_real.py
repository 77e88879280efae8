"""A quick comparison of models on real recordings: GNSDR of class "vocals" on a fixed subset.

For choosing between training recipes in minutes rather than the quarter hour of
``benchmarks/real.py`` (whose clips, queries and metrics this reuses): every ``--every``-th clip of
each held-out MIR-1K singer, and the full-band solo voices over the corpus' test accompaniment,
each separated with the model's class mean "vocals"::

    python benchmarks/ablation_real.py MODEL [MODEL ...] --corpus ../corpus

Prints one line per model; the figures are GNSDR (dB), the length-weighted mean over clips of
SDR(estimate) - SDR(mixture), plain SDR over the whole clip.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

import real  # noqa: E402

from aqsep import Separator  # noqa: E402


def gnsdr(sep: Separator, clips: list[real.Clip]) -> float:
    """Length-weighted mean SDR gain of the class-mean "vocals" estimate over the mixture."""
    z = sep.class_latent(real.VOCALS)
    gains, weights = [], []
    for clip in clips:
        est = sep.separate(clip.mixture, clip.sample_rate, z)["target"]
        gains.append(real.sdr(clip.voice, est) - real.sdr(clip.voice, clip.mixture))
        weights.append(clip.seconds)
    return float(np.average(gains, weights=weights))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="released model folders")
    p.add_argument("--mir1k", type=Path, default=ROOT.parent / "shared" / "data" / "mir1k")
    p.add_argument("--solo", type=Path, default=ROOT.parent / "shared" / "data" / "solo-vocals")
    p.add_argument("--corpus", type=Path, default=ROOT.parent / "corpus")
    p.add_argument("--every", type=int, default=5, help="every N-th clip of each held-out singer")
    args = p.parse_args(argv)
    by_singer: dict[str, list[real.Clip]] = {}
    for clip in real.mir1k_clips(args.mir1k, False):
        by_singer.setdefault(clip.meta["singer"], []).append(clip)
    mir1k = [c for clips in by_singer.values() for c in clips[:: args.every]]
    full = real.fullband_clips(args.solo, args.corpus, False)
    for model in args.models:
        start = time.perf_counter()
        sep = Separator(model)
        print(
            f"{model}: MIR-1K GNSDR {gnsdr(sep, mir1k):+.2f} dB ({len(mir1k)} clips), "
            f"full band {gnsdr(sep, full):+.2f} dB ({len(full)} mixtures), "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
