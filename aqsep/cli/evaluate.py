"""`aqsep evaluate`: separate every track of a data split and score it with museval."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from aqsep.cli.argtypes import add_chunk_arguments, chunk_options, positive_int
from aqsep.errors import OutputError, QueryError

if TYPE_CHECKING:
    from aqsep.api import Separator
    from aqsep.data.track import Track

HELP = """\
Separates every track of the split (full tracks, chunked) and scores each target with museval
(BSSEval v4, 1 s windows and hop, at the data's own sample rate): one JSON per track in museval's
format under OUT/<method>/<split>/, and OUT/summary.md + OUT/summary.csv (median over frames, then
over tracks). Each target is scored as "target vs rest": a 2-source problem whose references are
the true target and the true rest and whose estimates are the target estimate and the mixture minus
it. The mixture is the sum of the stems. Rerunning with the same OUT resumes: tracks already scored
are read back, not recomputed."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score separations of a data set with museval",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_arguments(p)
    p.add_argument(
        "--mode",
        default="mean",
        help="query mode(s), comma-separated: gt (true target of each chunk), mean (class mean "
        "latent), iterative (class mean, then the estimate re-encoded); default: mean",
    )
    p.add_argument(
        "--refine",
        type=int,
        default=1,
        metavar="N",
        help="refinement steps of --mode iterative (1)",
    )
    p.add_argument(
        "--targets", help="comma-separated targets (default: every coarse class in the data)"
    )
    p.add_argument(
        "--references",
        action="store_true",
        help="also score the mixture as estimate and the oracle ideal ratio mask",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="score with fast-bss-eval (torch) instead of museval: quick, labelled as such",
    )
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (reused to resume)")
    p.set_defaults(func=run)


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared with `aqsep experiment`: model, data set and chunking."""
    p.add_argument(
        "--model", help="released model folder or bundled name (default: the bundled model)"
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="[KIND:]PATH",
        help="a stems folder (DATA/<split>/<track>/<stem>.wav + metadata.json, as the corpus), "
        "MIR-1K (mir1k:PATH, split by singer), a MUSDB18 root or one .stem.mp4 file; KIND is "
        "stems, musdb, musdb-hq or mir1k (guessed when left out). A folder without "
        "train/valid/test folders holds training tracks, unless it is named test or valid",
    )
    p.add_argument("--musdb", action="store_true", help="DATA is a MUSDB18 root (as musdb:DATA)")
    p.add_argument(
        "--is-wav", action="store_true", help="MUSDB18-HQ (wav folders) instead of stem.mp4"
    )
    p.add_argument(
        "--split", default="test", choices=("train", "valid", "test"), help="data split (test)"
    )
    p.add_argument(
        "--allow-training-tracks",
        action="store_true",
        help="score tracks the model was trained on (refused by default: its metadata names its "
        "training data)",
    )
    p.add_argument(
        "--max-tracks",
        type=positive_int,
        metavar="N",
        help="only the first N tracks (sorted by name)",
    )
    add_chunk_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def open_data(args: argparse.Namespace) -> tuple[list[Track], Separator]:
    """The tracks and the loaded separator named by :func:`add_data_arguments`'s options.

    Tracks the model was trained on are refused unless ``--allow-training-tracks``.
    """
    from aqsep.api import Separator
    from aqsep.evaluate import check_held_out, list_tracks

    tracks = list_tracks(
        args.data,
        split=args.split,
        musdb=args.musdb,
        is_wav=args.is_wav,
        max_tracks=args.max_tracks,
    )
    sep = Separator(args.model, **chunk_options(args))
    if not args.allow_training_tracks:
        check_held_out(sep, tracks, f"{data_label(args)} ({args.split} split)")
    return tracks, sep


def data_label(args: argparse.Namespace) -> str:
    """``KIND:PATH`` of ``--data``, as :meth:`aqsep.data.DataSource.parse` reads it."""
    from aqsep.data import DataSource

    return str(DataSource.parse(str(args.data), musdb=args.musdb, is_wav=args.is_wav))


def split_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


class Bars:
    """tqdm bars fed by the evaluation's progress dicts: one over tracks, one per track."""

    def __init__(self, total: int, quiet: bool) -> None:
        from tqdm import tqdm

        self.tqdm, self.quiet = tqdm, quiet
        self.tracks = (
            None
            if quiet
            else tqdm(total=total, desc="tracks", unit="track", position=0, file=sys.stderr)
        )
        self.inner = None

    def __call__(self, info: dict) -> None:
        if self.quiet:
            return
        if info["stage"] == "track":
            if self.inner is not None:
                self.inner.close()
            assert self.tracks is not None
            self.tracks.total, self.tracks.n = info["total"], info["index"]
            self.tracks.refresh()
            self.inner = self.tqdm(
                desc=info["track"][:32], unit="job", position=1, leave=False, file=sys.stderr
            )
        elif info["stage"] == "job" and self.inner is not None:
            self.inner.total = info["total"]
            self.inner.n = info["done"]
            self.inner.set_postfix_str(
                f"{info['method']}/{info['target']}{' (cached)' if info['cached'] else ''}"
            )
        elif info["stage"] == "separate" and self.inner is not None:
            passes = int(info.get("passes", 1))
            step = f"pass {info.get('pass', 1)}/{passes} " if passes > 1 else ""
            self.inner.set_postfix_str(
                f"{info.get('method')}/{info.get('target')} {step}"
                f"chunk {info['done']}/{info['total']}"
            )

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
        if self.tracks is not None:
            self.tracks.update(self.tracks.total - self.tracks.n)
            self.tracks.close()


def run(args: argparse.Namespace) -> int:
    from aqsep.evaluate import (
        METHODS,
        MODES,
        check_targets,
        default_targets,
        evaluate_tracks,
        summarize,
        write_summary,
    )

    modes = split_list(args.mode) or ["mean"]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise QueryError(f"unknown --mode {', '.join(bad)}; choose from {', '.join(MODES)}")
    methods = (["mixture", "irm"] if args.references else []) + modes
    assert all(m in METHODS for m in methods)
    check_output_folder(args.out)
    tracks, sep = open_data(args)
    targets = split_list(args.targets)
    if targets is None:
        targets, unknown = default_targets(sep, tracks, methods)
        if unknown and targets:
            print(
                f"aqsep: not scored: {', '.join(unknown)} (the model has no class latent for "
                "it; --targets chooses)",
                file=sys.stderr,
            )
    check_targets(sep, targets, methods)
    make_output_folder(args.out)
    bars = Bars(len(tracks), args.quiet)
    try:
        scores = evaluate_tracks(
            sep,
            tracks,
            targets,
            methods,
            refine=args.refine,
            fast=args.fast,
            out_dir=args.out,
            split=args.split,
            data_id=data_id(args),
            progress=bars,
        )
    finally:
        bars.close()
    rows = summarize(scores)
    dataset = f"{data_label(args)} ({args.split} split, {len(tracks)} tracks)"
    md, csv_path = write_summary(
        rows,
        args.out,
        fast=args.fast,
        refine=args.refine,
        dataset=dataset,
        title=f"aqsep evaluate: {', '.join(modes)}",
    )
    print(md.read_text(), end="")
    print(f"\nwrote {md} and {csv_path}; per-track JSON under {args.out}/<method>/{args.split}/")
    return 0


def check_output_folder(out: Path) -> None:
    """Refuse ``-o OUT`` through a regular file at once, in one line."""
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OutputError(f"cannot write to {out}: {blocker} is a file, not a folder")


def make_output_folder(out: Path) -> None:
    """Create ``-o OUT`` before any work (after the checks that need no output)."""
    check_output_folder(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write to {out}: {err.strerror or err}") from None


def data_id(args: argparse.Namespace) -> str:
    """The data set in the per-track JSON headers (caches of another data set are refused)."""
    from aqsep.data import DataSource

    source = DataSource.parse(str(args.data), musdb=args.musdb, is_wav=args.is_wav)
    path = str(Path(source.path).resolve())
    return path if source.kind == "stems" else f"{source.kind}:{path}"
