"""The paper's five experiments, one short module each, on top of the API and :mod:`aqsep.evaluate`.

Each module has ``run(ctx: Context) -> list[Path]`` writing PNG figures, the CSV numbers behind
them and a Markdown summary into ``ctx.out_dir`` (file names start with the experiment's name,
so all five can share one folder and its score caches).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aqsep.experiments import compare, interpolate, iterative, tsne, zeroshot
from aqsep.experiments.common import Context

EXPERIMENTS: dict[str, Callable[[Context], list[Path]]] = {
    "tsne": tsne.run,
    "zeroshot": zeroshot.run,
    "interpolate": interpolate.run,
    "iterative": iterative.run,
    "compare": compare.run,
}


def run_experiment(name: str, ctx: Context) -> list[Path]:
    """Run one experiment (or ``"all"``) and return the files it wrote."""
    if name == "all":
        return [f for n in EXPERIMENTS for f in run_experiment(n, ctx)]
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)} or all")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    return EXPERIMENTS[name](ctx)


__all__ = ["EXPERIMENTS", "Context", "run_experiment"]
