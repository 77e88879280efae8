"""The corpus: which tracks exist, where they go, and the metadata that describes them.

:func:`build_corpus` lays out the splits, keeps the tracks already complete (an interrupted
run resumes), renders the others in a pool of processes (:mod:`.rendering`) and writes the
corpus metadata. The readers here (:func:`read_track_metadata`, :func:`list_tracks`...) are
what other tools use to find their way in a built corpus.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aqsep.audio import write_text_atomic
from aqsep.data.synth import rendering
from aqsep.data.synth.composition import SPLITS, piece_pools
from aqsep.data.synth.instruments import (
    COARSE_CLASSES,
    FINE_TO_COARSE,
    SynthPool,
    check_drum_kit,
    check_soundfont,
    default_drum_kits,
    default_soundfonts,
    general_midi_coverage,
    import_tinysoundfont,
    is_general_midi,
)
from aqsep.data.synth.rendering import METADATA_NAME, MIXTURE_NAME
from aqsep.data.synth.sampled import (
    SampledPiano,
    default_samples_dir,
    find_piano_samples,
    piano_library_name,
)
from aqsep.errors import DataError, OutputError

#: 1: mono stems, soundfonts only; 2: sampled instruments, a produced stereo mix.
FORMAT_VERSION = 2
# The most tracks of a corpus: its plan is held in memory before the first track is written.
MAX_TRACKS = 100_000


def split_of_index(index: int) -> str:
    """Split of the track with this index: 0 -> test, 1 -> valid, then 8 train in every 10.

    Depends on the index only, so a corpus grown with more hours keeps its earlier tracks in
    their splits, and any corpus of three tracks or more has every split.
    """
    r = index % 10
    if r == 0:
        return "test"
    if r == 1:
        return "valid"
    return "train"


def _read_json(path: Path, missing: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError as err:
        raise DataError(f"{path} does not exist: {missing}") from err
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {err}") from err


def read_track_metadata(track_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``metadata.json`` of a rendered track (raises DataError when missing or invalid)."""
    path = Path(track_dir) / METADATA_NAME
    meta = _read_json(path, "not a rendered track")
    if not isinstance(meta, dict) or not isinstance(meta.get("stems"), dict):
        raise DataError(f"{path} is not a track metadata file (no 'stems')")
    return meta


def read_corpus_metadata(corpus_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The corpus-level ``metadata.json`` written by :func:`build_corpus`."""
    path = Path(corpus_dir) / METADATA_NAME
    meta = _read_json(path, "not a corpus built by `aqsep synth`")
    if not isinstance(meta, dict) or "splits" not in meta:
        raise DataError(f"{path} is not a corpus metadata file (no 'splits')")
    return meta


def is_track_complete(track_dir: str | os.PathLike[str]) -> bool:
    """True when the folder holds a readable metadata.json and every file it lists."""
    try:
        meta = read_track_metadata(track_dir)
    except DataError:
        return False
    d = Path(track_dir)
    names = [f"{s}.wav" for s in meta["stems"]] + [meta.get("mixture", MIXTURE_NAME)]
    return all((d / n).is_file() for n in names)


def list_tracks(corpus_dir: str | os.PathLike[str], split: str) -> list[Path]:
    """Folders of the complete tracks of a split, in name order."""
    d = Path(corpus_dir) / split
    if not d.is_dir():
        return []
    return [
        p
        for p in sorted(d.iterdir())
        if p.is_dir() and not p.name.startswith(".") and is_track_complete(p)
    ]


def _track_name(index: int) -> str:
    return f"track_{index:05d}"


def _soundfont_plan(soundfonts: Sequence[Path]) -> dict[str, list[Path]]:
    if len(soundfonts) == 1:
        return {s: [soundfonts[0]] for s in SPLITS}
    return {
        "train": list(soundfonts[:-1]),
        "valid": list(soundfonts[:-1]),
        "test": [soundfonts[-1]],
    }


def _reserve_for_test(items: Sequence[Path]) -> dict[str, list[Path]]:
    """Optional timbre sources per split: one is for train and valid only; of several, the
    last one is for the test split only, so that the test split has timbres never trained on."""
    if not items:
        return {s: [] for s in SPLITS}
    if len(items) == 1:
        return {"train": [items[0]], "valid": [items[0]], "test": []}
    return {"train": list(items[:-1]), "valid": list(items[:-1]), "test": [items[-1]]}


def _sampled_sources(
    drum_kits: Sequence[str | os.PathLike[str]] | None,
    samples: str | os.PathLike[str] | None,
    sampled: bool,
    pool: SynthPool,
) -> tuple[dict[str, dict[str, Any]], list[Path]]:
    """(check of every usable drum kit by path, folders of sampled pianos)."""
    if not sampled:
        if drum_kits or samples is not None:
            raise DataError("sampled instruments were both turned off and named")
        return {}, []
    kits: dict[str, dict[str, Any]] = {}
    if drum_kits is None:
        for path in default_drum_kits():
            try:
                kits[str(path)] = check_drum_kit(path, pool)
            except DataError:
                continue  # an installed kit that does not play: not used
    else:
        for item in drum_kits:
            path = Path(item).expanduser()
            if not path.is_file():
                raise DataError(f"drum kit {path} does not exist")
            path = path.resolve()
            if is_general_midi(path):
                raise DataError(f"{path.name} is a General MIDI set, not a drum-kit soundfont")
            kits[str(path)] = check_drum_kit(path, pool)
    if len({Path(k).name for k in kits}) != len(kits):
        raise DataError(f"two drum kits share a file name: {sorted(kits)}; rename one")
    samples_dir = default_samples_dir() if samples is None else Path(samples).expanduser()
    piano = find_piano_samples(samples_dir)
    if piano is None:
        if samples is not None:
            raise DataError(f"no piano note recordings (such as C4v10.ogg) in {samples_dir}")
        return kits, []
    SampledPiano(piano, pool.sample_rate).check()
    return kits, [piano]


def build_corpus(
    out_dir: str | os.PathLike[str],
    *,
    hours: float,
    seed: int,
    sample_rate: int = 22050,
    track_seconds: float = 30.0,
    jobs: int = 1,
    soundfonts: Sequence[str | os.PathLike[str]] | None = None,
    drum_kits: Sequence[str | os.PathLike[str]] | None = None,
    samples: str | os.PathLike[str] | None = None,
    sampled: bool = True,
    production: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Render a labelled multitrack corpus into ``out_dir`` and return its metadata.

    ``hours`` of audio are cut into ``max(3, round(hours * 3600 / track_seconds))`` tracks:
    track 0 goes to test, 1 to valid, then 8 in every 10 to train (:func:`split_of_index`).
    Tracks already complete in ``out_dir`` are kept; the others are rendered (in a pool of
    ``jobs`` processes). The same seed gives bit-identical audio.

    ``soundfonts``: General MIDI SF2/SF3 files; by default :func:`default_soundfonts`. With
    more than one, the last one is used for the test split only and the others for train and
    valid.

    Sampled instruments play part of the drums and pianos where available (unless
    ``sampled`` is False): ``drum_kits``, drum-kit soundfonts (by default
    :func:`default_drum_kits`, the avldrums.lv2 kits), and the piano recordings found in
    ``samples`` (by default :func:`default_samples_dir`; see :func:`find_piano_samples`). A
    single source of a kind plays train and valid only; of several, the last plays the test
    split only. Each stem's ``instrument`` in its track's metadata says what rendered it.

    ``production``: every stem goes through its own EQ, compressor, panning and a send to the
    track's room, and is stereo (:mod:`.mixing`; each stem's ``mix`` and the track's ``room``
    in the metadata); without it the stems are mono and dry. Either way the mixture is exactly
    the sum of the stems.

    The returned dict is the corpus metadata written to ``out_dir/metadata.json`` plus a
    ``"build"`` entry with figures of this run (tracks rendered and kept, CPU seconds).
    """
    if not (isinstance(hours, (int, float)) and math.isfinite(hours) and hours > 0):
        raise DataError(f"hours must be a positive number, got {hours!r}")
    if not (math.isfinite(track_seconds) and 1.0 <= track_seconds <= 600.0):
        raise DataError(f"track_seconds must be between 1 and 600, got {track_seconds!r}")
    if not (8000 <= int(sample_rate) <= 192000):
        raise DataError(f"sample_rate must be between 8000 and 192000 Hz, got {sample_rate!r}")
    if jobs < 1:
        raise DataError(f"jobs must be at least 1, got {jobs!r}")
    if not 0 <= int(seed) < 2**63:
        raise DataError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")
    n_tracks = max(3, int(round(hours * 3600.0 / track_seconds)))
    if n_tracks > MAX_TRACKS:
        raise DataError(
            f"{hours:g} hours in tracks of {track_seconds:g} s would be {n_tracks} tracks; a "
            f"corpus holds at most {MAX_TRACKS} ({MAX_TRACKS * track_seconds / 3600:g} hours "
            "of such tracks): ask for fewer hours, or longer tracks"
        )
    sample_rate = int(sample_rate)
    seed = int(seed)
    import_tinysoundfont()

    if soundfonts is None:
        sf_paths = default_soundfonts()
        if not sf_paths:
            raise DataError(
                "no General MIDI soundfont found: install pretty_midi (it ships TimGM6mb.sf2) "
                "or a Debian soundfont package, or name one"
            )
    else:
        sf_paths = []
        for s in soundfonts:
            p = Path(s).expanduser()
            if not p.is_file():
                raise DataError(f"soundfont {p} does not exist")
            if p.resolve() not in [q.resolve() for q in sf_paths]:
                sf_paths.append(p.resolve())
        if not sf_paths:
            raise DataError("the list of soundfonts is empty")
        for p in sf_paths:
            have, need = general_midi_coverage(p)
            if have < 0.75 * need:
                raise DataError(
                    f"soundfont {p.name} is not a General MIDI set: its bank 0 has {have} of "
                    f"the {need} programs the corpus plays (a drum-kit soundfont is not one)"
                )
    names = [p.name for p in sf_paths]
    if len(set(names)) != len(names):
        raise DataError(f"two soundfonts share a file name: {names}; rename one")
    plan = _soundfont_plan(sf_paths)
    pool = SynthPool(sample_rate)
    kit_checks, pianos = _sampled_sources(drum_kits, samples, sampled, pool)
    kit_plan = _reserve_for_test([Path(k) for k in kit_checks])
    piano_plan = _reserve_for_test(pianos)

    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            (out / split).mkdir(exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"cannot write the corpus into {out}: {err}") from err

    plan_names = {s: [p.name for p in plan[s]] for s in SPLITS}
    kit_names = {s: [p.name for p in kit_plan[s]] for s in SPLITS}
    piano_names = {s: [piano_library_name(p) for p in piano_plan[s]] for s in SPLITS}
    settings = {
        "seed": seed,
        "sample_rate": sample_rate,
        "track_seconds": float(track_seconds),
        "production": bool(production),
    }
    root_meta_path = out / METADATA_NAME
    if root_meta_path.exists():
        old = read_corpus_metadata(out)
        if old.get("format") != FORMAT_VERSION:
            raise DataError(
                f"{out} holds a corpus of format {old.get('format')!r}, written by an earlier "
                f"corpus builder (this one writes format {FORMAT_VERSION}): use another folder"
            )
        for key, value in settings.items():
            if old.get(key) != value:
                raise DataError(
                    f"{out} holds a corpus built with {key}={old.get(key)!r}, not {value!r}: "
                    "use the same settings to resume it, or another folder"
                )
        for key, now, what in (
            ("soundfont_plan", plan_names, "soundfonts"),
            ("drum_kit_plan", kit_names, "drum kits"),
            ("sampled_piano_plan", piano_names, "sampled pianos"),
        ):
            if old.get(key) != now:
                raise DataError(
                    f"{out} was built with {what} {old.get(key)}, now {now}: use the same "
                    f"{what} to resume it, or another folder"
                )

    # clean temporary folders left by an interrupted run
    for split in SPLITS:
        for p in (out / split).iterdir():
            if p.is_dir() and p.name.startswith(".") and ".tmp-" in p.name:
                shutil.rmtree(p, ignore_errors=True)

    todo: list[tuple[int, str, int, str, str]] = []
    kept = 0
    ordinals: Counter[str] = Counter()
    for index in range(n_tracks):
        split = split_of_index(index)
        ordinal = ordinals[split]
        ordinals[split] += 1
        track_dir = out / split / _track_name(index)
        if is_track_complete(track_dir):
            meta = read_track_metadata(track_dir)
            if meta.get("seed") != seed or meta.get("sample_rate") != sample_rate:
                raise DataError(f"{track_dir} was rendered with other settings; use another folder")
            kept += 1
            continue
        choices = plan[split]
        sf_rng = np.random.default_rng([seed, index, 1_000_003])
        soundfont = choices[int(sf_rng.integers(len(choices)))]
        todo.append((index, split, ordinal, str(track_dir), str(soundfont)))

    t0_cpu = time.process_time()
    checks = {str(p): check_soundfont(p, sample_rate, pool) for p in sf_paths}
    check_cpu = time.process_time() - t0_cpu
    for p in plan["test"]:
        c = checks[str(p)]
        if not c["drum_kits"]:
            raise DataError(f"soundfont {p.name} has no usable General MIDI drum kit (bank 128)")
    pools = piece_pools()

    base_meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "generator": "aqsep.data.synth",
        "complete": False,
        "seed": seed,
        "hours": float(hours),
        "sample_rate": sample_rate,
        "track_seconds": float(track_seconds),
        "production": bool(production),
        "n_tracks": n_tracks,
        "soundfont_plan": plan_names,
        "drum_kit_plan": kit_names,
        "sampled_piano_plan": piano_names,
        "mixture": MIXTURE_NAME,
        "coarse_classes": list(COARSE_CLASSES),
        "fine_to_coarse": dict(FINE_TO_COARSE),
        "synthetic_voice_note": (
            "stems of coarse class 'vocals' are voice-like soundfont patches (choir, voice oohs, "
            "synth voice) playing parts of the music: synthetic voice, no sung text"
        ),
    }
    if not root_meta_path.exists():
        _write_json(root_meta_path, {**base_meta, "splits": {s: [] for s in SPLITS}})

    state = {
        "sample_rate": sample_rate,
        "track_seconds": float(track_seconds),
        "seed": seed,
        "production": bool(production),
        "checks": checks,
        "pools": pools,
        "drum_kits": {s: [kit_checks[str(p)] for p in kit_plan[s]] for s in SPLITS},
        "pianos": {s: [str(p) for p in piano_plan[s]] for s in SPLITS},
    }
    results: list[dict[str, Any]] = []
    wall0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_tracks, initial=kept, unit="track", desc="synth", dynamic_ncols=True)
    rendering.share_pool(pool)  # the soundfonts loaded for the check, reused by the renderers
    try:
        if jobs > 1 and len(todo) > 1:
            import multiprocessing as mp

            with mp.Pool(
                min(jobs, len(todo)), initializer=rendering.init_worker, initargs=(state,)
            ) as mp_pool:
                for res in mp_pool.imap_unordered(rendering.render_job, todo):
                    results.append(res)
                    if bar is not None:
                        bar.update(1)
        else:
            rendering.init_worker(state)
            for job in todo:
                results.append(rendering.render_job(job))
                if bar is not None:
                    bar.update(1)
    finally:
        rendering.clear_state()
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - wall0

    meta = _corpus_summary(out, n_tracks, base_meta, checks, kit_checks)
    _write_json(root_meta_path, meta)
    render_cpu = sum(r["cpu_s"] for r in results)
    audio_s = sum(r["seconds"] for r in results)
    meta = dict(meta)
    meta["build"] = {
        "rendered_tracks": len(results),
        "kept_tracks": kept,
        "rendered_seconds": audio_s,
        "render_cpu_seconds": render_cpu,
        "check_cpu_seconds": check_cpu,
        "wall_seconds": wall,
        "seconds_per_cpu_second": (audio_s / render_cpu) if render_cpu > 0 else None,
    }
    return meta


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=1))


def _corpus_summary(
    out: Path,
    n_tracks: int,
    base_meta: dict[str, Any],
    checks: dict[str, dict[str, Any]],
    kit_checks: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    pieces: dict[str, set[str]] = {s: set() for s in SPLITS}
    used_sf: dict[str, set[str]] = {s: set() for s in SPLITS}
    fine_counts: Counter[str] = Counter()
    instruments: dict[str, Counter[str]] = {s: Counter() for s in SPLITS}
    for index in range(n_tracks):
        split = split_of_index(index)
        track_dir = out / split / _track_name(index)
        if not is_track_complete(track_dir):
            continue
        meta = read_track_metadata(track_dir)
        splits[split].append(track_dir.name)
        if meta.get("piece") and meta["piece"] != "generated":
            pieces[split].add(meta["piece"])
        used_sf[split].add(meta.get("soundfont", ""))
        fine_counts.update(s["fine"] for s in meta["stems"].values())
        for stem in meta["stems"].values():
            if isinstance(stem.get("instrument"), dict):
                instruments[split][
                    f"{stem['instrument']['kind']}: {stem['instrument']['name']}"
                ] += 1
    return {
        **base_meta,
        "complete": all(len(splits[s]) for s in SPLITS)
        and sum(len(v) for v in splits.values()) == n_tracks,
        "splits": splits,
        "pieces": {s: sorted(v) for s, v in pieces.items()},
        "soundfonts": {s: sorted(v) for s, v in used_sf.items()},
        "soundfont_checks": {
            Path(k).name: {
                "skipped_programs": v["skipped_programs"],
                "drum_kits": sorted(int(x) for x in v["drum_kits"]),
            }
            for k, v in checks.items()
        },
        "drum_kit_checks": {Path(k).name: v["keys"] for k, v in kit_checks.items()},
        "stem_counts": dict(sorted(fine_counts.items())),
        "instrument_stem_counts": {s: dict(sorted(c.items())) for s, c in instruments.items()},
    }
