"""Does computing L_latent on part of each batch hurt training? A small seeded trial.

Trains the learning test's small model (tests/train/test_learning.py: generated bass / lead /
noise-burst instruments, 400 steps, batch 8) once per seed and ``--latent-fraction``, and prints
for each run the validation SDR and the SDR gain over the mixture on the held-out test tracks
(with a query from another track and with the class mean). Run from the repository root:

    python benchmarks/latent_fraction.py                    # seeds 0-3, fractions 1 and 0.5
    python benchmarks/latent_fraction.py --seeds 0,1 --fractions 1,0.75,0.5 --out trial.json

About 40 s per run on one CPU thread. The corpus and runs go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_learning as learning  # noqa: E402  (the corpus, model size and settings of the test)

from aqsep.train import RunSpec, train  # noqa: E402


def _numbers(text: str, kind: type) -> list:
    return [kind(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3", help="comma-separated seeds (default 0,1,2,3)")
    ap.add_argument("--fractions", default="1,0.5", help="latent fractions (default 1,0.5)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--out", type=Path, help="also write the results as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="aqsep-latent-fraction-") as tmp:
        root = Path(tmp)
        corpus = learning.make_corpus(root / "data")
        for seed in _numbers(args.seeds, int):
            for fraction in _numbers(args.fractions, float):
                settings = dict(learning.TRAIN_SETTINGS, latent_fraction=fraction, seed=seed)
                spec = RunSpec.create(
                    root / "data",
                    preset="cpu",
                    model_config=learning.learning_config(),
                    train_overrides=settings,
                )
                result = train(spec, root / f"run_{seed}_{fraction}", progress=False)
                assert result.model_dir is not None
                gains = learning.separation_gains(result.model_dir, corpus["test"])
                means = {f"{n}/{m}": round(float(np.mean(g)), 1) for (n, m), g in gains.items()}
                row = {
                    "seed": seed,
                    "latent_fraction": fraction,
                    "train_s": round(result.wall_time, 1),
                    "val_sdr_db": round(result.metrics.get("val/sdr", float("nan")), 2),
                    "val_latent": round(result.metrics.get("val/latent", float("nan")), 3),
                    "min_gain_db": min(means.values()),
                    "gains_db": means,
                }
                results.append(row)
                print(json.dumps(row), flush=True)
    print(
        "\n| seed | latent fraction | val SDR (dB) | smallest test gain (dB) | val L_latent | train (s) |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['seed']} | {r['latent_fraction']:g} | {r['val_sdr_db']:.1f} | "
            f"{r['min_gain_db']:+.1f} | {r['val_latent']:.3f} | {r['train_s']:.0f} |"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
