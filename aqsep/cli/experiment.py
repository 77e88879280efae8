"""`aqsep experiment NAME`: rerun one of the paper's experiments on any model and data set."""

from __future__ import annotations

import argparse
from pathlib import Path

from aqsep.cli.evaluate import (
    Bars,
    add_data_arguments,
    data_id,
    data_label,
    open_data,
    split_list,
)

NAMES = ("tsne", "zeroshot", "interpolate", "iterative", "compare", "all")

HELP = """\
Experiments (each writes PNG figures, the CSV numbers behind them and NAME.md into OUT):
  tsne         latents of test excerpts per stem, t-SNE coloured by class, k-NN accuracy and silhouette
  zeroshot     sub-class queries (hi-hat out of hi-hat + kick + bass, piano out of piano + electric
               guitar, snare out of its kit), query taken from another test track; SDR vs the mixture
  interpolate  slerp between two class means (--from vocals --to drums, --alphas 0,0.3,0.5,0.7,1);
               spectrograms and the gain of each true source in the output
  iterative    class mean vs re-encoded estimate, per class; tracks gaining > 0.4 dB marked on t-SNE
  compare      our rows (mean, iterative, GT, mixture, oracle IRM) beside the paper's quoted rows
  all          the five above
Scores use museval (BSSEval v4, 1 s windows), each target scored as target vs rest; per-track scores
are cached under OUT/scores/ (shared by iterative and compare, and resumed after an interruption)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="run one of the paper's experiments (figures + tables)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", choices=NAMES, help="which experiment")
    add_data_arguments(p)
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of t-SNE and cross-validation (0)")
    p.add_argument(
        "--fast",
        action="store_true",
        help="score with fast-bss-eval instead of museval (validation only)",
    )
    p.add_argument(
        "--refine",
        type=int,
        default=1,
        metavar="N",
        help="refinement steps of the iterative mode (1)",
    )
    p.add_argument(
        "--targets",
        help="comma-separated classes for iterative/compare (default: the data's coarse "
        "classes the model knows)",
    )
    p.add_argument("--windows", type=int, help="tsne: excerpts per stem (6)")
    p.add_argument(
        "--pairs",
        help="zeroshot: QUERY:OTHER+OTHER,... (default hi-hat:kick+bass,piano:electric "
        "guitar,snare:drums)",
    )
    p.add_argument(
        "--from", dest="source", default="vocals", help="interpolate: start class (vocals)"
    )
    p.add_argument("--to", dest="dest", default="drums", help="interpolate: end class (drums)")
    p.add_argument("--alphas", help="interpolate: comma-separated weights (0,0.3,0.5,0.7,1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aqsep.experiments import Context, run_experiment

    tracks, sep = open_data(args)
    kind, _, path = data_label(args).partition(":")
    name = Path(path).name if kind == "stems" else f"{kind}:{Path(path).name}"
    dataset = f"{name} ({args.split} split, {len(tracks)} track{'s' if len(tracks) != 1 else ''})"
    bars = Bars(len(tracks), args.quiet)
    ctx = Context(
        sep,
        tracks,
        args.out,
        split=args.split,
        data_id=data_id(args),
        dataset=dataset,
        seed=args.seed,
        fast=args.fast,
        refine=args.refine,
        targets=split_list(args.targets),
        progress=bars,
        options={
            "windows": args.windows,
            "pairs": args.pairs,
            "source": args.source,
            "dest": args.dest,
            "alphas": args.alphas,
        },
    )
    try:
        files = run_experiment(args.name, ctx)
    finally:
        bars.close()
    for f in files:
        print(f)
    return 0
