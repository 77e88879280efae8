"""One track: its arrangement (which instrument plays which part), its audio and its files.

:func:`render_job` is what every process of the corpus builder runs for one track: it plans
the stems from the track's own random generator, renders each with its instrument, sets the
levels, quantises the stems to 16 bits and writes them with a mixture that is exactly their sum.
The state shared by the tracks of a process (settings, soundfont checks, piece pools, loaded
soundfonts) is set once per process by :func:`init_worker`.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from aqsep.audio import write_failure
from aqsep.data.synth.composition import (
    DRUM_PIECES,
    PIECE_ATTEMPTS,
    Note,
    accompaniment,
    bass_line,
    beat_harmony,
    choose,
    drum_groove,
    excerpt,
    load_music,
    register_shift,
)
from aqsep.data.synth.instruments import (
    BASS_PROGRAMS,
    CHORD_FAMILIES,
    DRUM_BANK,
    FINE_TO_COARSE,
    PART_FAMILIES,
    VOICE_PROGRAMS,
    SynthPool,
    pick_program,
)
from aqsep.data.synth.mixing import (
    Reverb,
    active_db,
    apply_stem_mix,
    draw_room,
    draw_stem_mix,
    rms_db,
    room_impulse,
)
from aqsep.data.synth.sampled import SampledPiano, piano_library_name
from aqsep.errors import DataError, OutputError

MIXTURE_NAME = "mixture.wav"
METADATA_NAME = "metadata.json"


class _RetryTrack(Exception):
    """This draw gave an unusable track: draw again."""


@dataclass
class _StemPlan:
    fine: str
    program: int
    bank: int
    drums: bool
    notes: list[Note]
    level_db: float
    source: str
    #: what plays it: ("soundfont", "") for the track's soundfont, ("sampled drum kit", path of
    #: the kit) or ("sampled piano", folder of the recordings)
    instrument: tuple[str, str] = ("soundfont", "")


def file_safe(label: str) -> str:
    """A stem file name from a fine label: ``electric guitar`` -> ``electric-guitar``."""
    safe = "".join(c if (c.isalnum() or c in "-_") else "-" for c in label.strip().lower())
    return safe.strip("-") or "stem"


#: Share of the stems that a sampled instrument plays where one is available to the split.
_SAMPLED_KIT_SHARE = 0.6
_SAMPLED_PIANO_SHARE = 0.7

_STATE: dict[str, Any] = {}


def share_pool(pool: SynthPool) -> None:
    """Keep ``pool`` (soundfonts the parent loaded) for :func:`init_worker` to reuse: a forked
    worker inherits it instead of loading every soundfont again."""
    _STATE.clear()
    _STATE["pool"] = pool


def clear_state() -> None:
    """Let the loaded soundfonts go."""
    _STATE.clear()


def init_worker(state: dict[str, Any]) -> None:
    """Set the settings and checks that every track of this process uses."""
    inherited = _STATE.get("pool")
    _STATE.clear()
    _STATE.update(state)
    if isinstance(inherited, SynthPool) and inherited.sample_rate == state["sample_rate"]:
        _STATE["pool"] = inherited
    else:
        _STATE["pool"] = SynthPool(state["sample_rate"])


def _plan_track(
    rng: np.random.Generator,
    split: str,
    zero_shot: bool,
    check: dict[str, Any],
    track_seconds: float,
) -> tuple[list[_StemPlan], dict[str, Any]]:
    music = load_music(rng, _STATE["pools"][split])
    usable = set(check["usable_programs"])
    kits = {int(k): v for k, v in check["drum_kits"].items()}

    # tempo: the pulse (time signature beat) at a random rate
    if music.compound:
        bpm = float(rng.uniform(50, 92))
    else:
        bpm = float(rng.uniform(68, 132))
    spq = 60.0 / bpm / music.beat_q  # seconds per quarter note
    need_q = track_seconds / spq
    transpose = int(rng.integers(-5, 7))
    parts = excerpt(music, rng, need_q)
    parts = [[(o, d, k + transpose) for o, d, k in p] for p in parts]
    keep = [i for i, p in enumerate(parts) if len(p) >= 2]
    parts = [parts[i] for i in keep]
    names = [music.names[i] for i in keep]
    if not parts:
        raise _RetryTrack("no notes in the excerpt")
    harmony = beat_harmony(parts, music.beat_q, need_q)

    stems: list[_StemPlan] = []
    medians = [float(np.median([k for _, _, k in p])) for p in parts]
    order = sorted(range(len(parts)), key=lambda i: -medians[i])  # highest part first
    assigned: set[int] = set()

    def part_notes(i: int, shift: int, base: float) -> list[Note]:
        out = []
        for o, d, k in parts[i]:
            accent = 8.0 if abs((o / music.bar_q) - round(o / music.bar_q)) < 1e-6 else 0.0
            vel = int(np.clip(base + accent + rng.normal(0, 5), 25, 127))
            key = int(k + shift)
            while key < 21:
                key += 12
            while key > 108:
                key -= 12
            out.append((o, d, key, vel))
        return out

    # vocals: the top voice (and sometimes a second one) on voice-like patches
    if rng.random() < 0.92:
        n_voc = 2 if (len(parts) >= 3 and rng.random() < 0.35) else 1
        for i in order[:n_voc]:
            prog = pick_program(rng, VOICE_PROGRAMS, usable)
            if prog is None:
                break
            shift = register_shift([k for _, _, k in parts[i]], prog.center, 40, 88)
            stems.append(
                _StemPlan(
                    prog.fine,
                    prog.number,
                    0,
                    False,
                    part_notes(i, shift, float(rng.uniform(75, 110))),
                    float(rng.uniform(-1, 4)),
                    f"piece part '{names[i]}'",
                )
            )
            assigned.add(i)

    # bass: generated on the harmony, or the piece's lowest part played by a bass patch
    if zero_shot or rng.random() < 0.95:
        prog = pick_program(rng, BASS_PROGRAMS, usable)
        if prog is not None:
            lowest = order[-1]
            if not zero_shot and lowest not in assigned and len(parts) >= 3 and rng.random() < 0.3:
                shift = register_shift([k for _, _, k in parts[lowest]], prog.center, 24, 60)
                notes = part_notes(lowest, shift, float(rng.uniform(85, 110)))
                assigned.add(lowest)
                source = f"piece part '{names[lowest]}'"
            else:
                notes = bass_line(rng, harmony, music.beat_q, music.compound, need_q)
                source = "generated bass line"
            stems.append(
                _StemPlan(
                    prog.fine, prog.number, 0, False, notes, float(rng.uniform(-3, 2)), source
                )
            )

    # the other parts of the piece
    fam_weights = {f: w for f, (w, _) in PART_FAMILIES.items()}
    if zero_shot:  # keep piano and electric guitar to the accompaniment, one stem each
        fam_weights = {
            f: w for f, w in fam_weights.items() if f not in ("piano", "electric guitar")
        }
    for i in order:
        if i in assigned:
            continue
        prog = None
        for _ in range(4):
            fam = choose(rng, fam_weights)
            prog = pick_program(rng, PART_FAMILIES[fam][1], usable, medians[i])
            if prog is not None:
                break
        if prog is None:
            continue
        shift = register_shift([k for _, _, k in parts[i]], prog.center)
        stems.append(
            _StemPlan(
                prog.fine,
                prog.number,
                0,
                False,
                part_notes(i, shift, float(rng.uniform(65, 105))),
                float(rng.uniform(-9, -1)),
                f"piece part '{names[i]}'",
            )
        )

    # accompaniment
    if zero_shot:
        families = ["piano", "electric guitar"]
    else:
        r = rng.random()
        n_acc = 0 if r < 0.25 else (1 if r < 0.75 else 2)
        cw = {f: w for f, (w, _, _, _) in CHORD_FAMILIES.items()}
        families = []
        for _ in range(n_acc):
            fam = choose(rng, cw)
            cw.pop(fam)
            families.append(fam)
    for fam in families:
        _, progs, low, styles = CHORD_FAMILIES[fam]
        prog = pick_program(rng, progs, usable)
        if prog is None:
            continue
        style = str(rng.choice(list(styles)))
        notes = accompaniment(rng, harmony, music.beat_q, music.compound, need_q, spq, low, style)
        stems.append(
            _StemPlan(
                prog.fine,
                prog.number,
                0,
                False,
                notes,
                float(rng.uniform(-8, -1)),
                f"generated accompaniment ({style})",
            )
        )

    # the sampled piano, where the split has one, plays some of the piano stems
    pianos: list[str] = _STATE["pianos"][split]
    for plan in stems:
        if plan.fine == "piano" and pianos and rng.random() < _SAMPLED_PIANO_SHARE:
            plan.instrument = ("sampled piano", pianos[int(rng.integers(len(pianos)))])

    # drums: a kit of the soundfont or a sampled kit
    sampled_kits: list[dict[str, Any]] = _STATE["drum_kits"][split]
    drum_kit: dict[str, Any] | None = None
    if (kits or sampled_kits) and (zero_shot or rng.random() < 0.92):
        if sampled_kits and (not kits or rng.random() < _SAMPLED_KIT_SHARE):
            chosen = sampled_kits[int(rng.integers(len(sampled_kits)))]
            keys = chosen["keys"]
            bank, program = int(chosen["bank"]), int(chosen["program"])
            instrument = ("sampled drum kit", str(chosen["path"]))
            drum_kit = {"kind": "sampled drum kit", "name": chosen["name"]}
        else:
            kit_ids = sorted(kits)
            program = kit_ids[int(rng.integers(len(kit_ids)))] if not zero_shot else kit_ids[0]
            keys, bank = kits[program], DRUM_BANK
            instrument = ("soundfont", "")
            drum_kit = {"kind": "soundfont", "name": check["name"], "bank": bank}
            drum_kit["program"] = program
        drum_parts = drum_groove(
            rng, need_q, music.bar_q, music.beat_q, music.compound, bpm, keys, zero_shot
        )
        kit_db = float(rng.uniform(-3, 2))
        offsets = {"kick": 0.0, "snare": -1.0, "hi-hat": -7.0, "toms": -4.0, "cymbals": -9.0}
        for fine in DRUM_PIECES:
            if fine in drum_parts:
                stems.append(
                    _StemPlan(
                        fine,
                        program,
                        bank,
                        True,
                        drum_parts[fine],
                        kit_db + offsets[fine] + float(rng.uniform(-2, 2)),
                        "generated drums",
                        instrument,
                    )
                )
    info = {
        "piece": music.piece,
        "piece_parts": names,
        "excerpt_start_quarters": round(music.start_q, 4),
        "tempo_bpm": round(bpm, 3),
        "beat_quarters": music.beat_q,
        "bar_quarters": music.bar_q,
        "transpose": transpose,
        "drum_kit": drum_kit,
    }
    return stems, info


def _render_track(job: tuple[int, str, int, str, str]) -> dict[str, Any]:
    """Render one track into a temporary folder, then move it into place."""
    index, split, ordinal, track_dir_s, soundfont_s = job
    t_cpu = time.process_time()
    sr: int = _STATE["sample_rate"]
    seconds: float = _STATE["track_seconds"]
    seed: int = _STATE["seed"]
    production: bool = _STATE["production"]
    soundfont = Path(soundfont_s)
    check = _STATE["checks"][soundfont_s]
    pool: SynthPool = _STATE["pool"]
    track_dir = Path(track_dir_s)
    n_samples = int(round(seconds * sr))
    zero_shot = split == "test" and ordinal % 2 == 0

    for attempt in range(PIECE_ATTEMPTS + 1):
        rng = np.random.default_rng([seed, index, attempt])
        try:
            plans, info = _plan_track(rng, split, zero_shot, check, seconds)
        except _RetryTrack:
            continue
        spq = 60.0 / info["tempo_bpm"] / info["beat_quarters"]
        audio: list[np.ndarray] = []
        kept: list[_StemPlan] = []
        for plan in plans:
            notes = []
            for o, d, k, v in plan.notes:
                on = int(round(o * spq * sr))
                notes.append((on, max(on + 1, int(round((o + d) * spq * sr))), k, v))
            if not notes:
                continue
            kind, where = plan.instrument
            if kind == "sampled piano":
                x = _sampled_piano(where).render(notes, n_samples)
            else:
                path = soundfont if kind == "soundfont" else Path(where)
                events = [(on, 1, k, v) for on, _, k, v in notes]
                events += [(off, 0, k, 0) for _, off, k, _ in notes]
                x = pool.render(path, plan.bank, plan.program, plan.drums, events, n_samples)
            if not np.all(np.isfinite(x)) or float(np.max(np.abs(x))) < 1e-5:
                continue
            audio.append(x if production else x.mean(axis=1, keepdims=True))
            kept.append(plan)
        if len(kept) >= 2:
            break
    else:  # pragma: no cover - every attempt gave fewer than two audible stems
        raise DataError(f"track {index}: could not render two audible stems")

    # production: every stem through its own chain, into one room (see .mixing)
    room = None
    mixes: list[dict[str, Any] | None] = [None] * len(kept)
    if production:
        room = draw_room(rng)
        reverb = Reverb(room_impulse(room, sr), n_samples)
        drum_side = 1.0 if rng.random() < 0.5 else -1.0
        for i, plan in enumerate(kept):
            chain = draw_stem_mix(rng, plan.fine, FINE_TO_COARSE[plan.fine], drum_side)
            audio[i] = apply_stem_mix(audio[i], chain, reverb, sr)
            mixes[i] = chain.to_dict()
    # levels: each stem's loudness while playing as planned
    for i, plan in enumerate(kept):
        x = audio[i] * np.float32(10 ** ((plan.level_db - active_db(audio[i], sr)) / 20.0))
        audio[i] = x.astype(np.float32)

    # common gain: the mixture and every stem stay below the target peak
    fade = min(n_samples, int(0.02 * sr))
    ramp = np.linspace(1.0, 0.0, fade, dtype=np.float32)
    for x in audio:
        x[n_samples - fade :] *= ramp[:, None]
    mix = np.sum(audio, axis=0)
    peak = max(float(np.max(np.abs(mix))), max(float(np.max(np.abs(x))) for x in audio))
    target = float(rng.uniform(0.6, 0.95))
    gain = target / peak
    ints = [np.round(x * (gain * 32767.0)).clip(-32767, 32767).astype(np.int16) for x in audio]

    name = track_dir.name
    tmp = track_dir.parent / f".{name}.tmp-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)

        stems_meta: dict[str, Any] = {}
        used: Counter[str] = Counter()
        total = np.zeros((n_samples, ints[0].shape[1]), dtype=np.int64)
        for plan, q, mix_meta in zip(kept, ints, mixes, strict=True):
            if int(np.max(np.abs(q))) < 8:  # inaudible after quantisation: leave it out
                continue
            base = file_safe(plan.fine)
            used[base] += 1
            stem = base if used[base] == 1 else f"{base}_{used[base]}"
            sf.write(tmp / f"{stem}.wav", q, sr, subtype="PCM_16")
            total += q
            stems_meta[stem] = {
                "fine": plan.fine,
                "coarse": FINE_TO_COARSE[plan.fine],
                "program": plan.program,
                "bank": plan.bank,
                "instrument": _instrument_meta(plan, soundfont),
                "synthetic_voice": FINE_TO_COARSE[plan.fine] == "vocals",
                "source": plan.source,
                "notes": len(plan.notes),
                "rms_db": round(rms_db(q.astype(np.float64) / 32768.0), 2),
                "mix": mix_meta,
            }
        # int16 / 2**15 is exact in float32, and so is the sum of a few hundred of them
        mixture = (total.astype(np.float64) / 32768.0).astype(np.float32)
        _write_float_wav(tmp / MIXTURE_NAME, mixture, sr)
        meta = {
            "track": name,
            "split": split,
            "index": index,
            "piece": info["piece"],
            "piece_parts": info["piece_parts"],
            "excerpt_start_quarters": info["excerpt_start_quarters"],
            "tempo_bpm": info["tempo_bpm"],
            "beat_quarters": info["beat_quarters"],
            "bar_quarters": info["bar_quarters"],
            "transpose": info["transpose"],
            "drum_kit": info["drum_kit"],
            "sample_rate": sr,
            "channels": int(mixture.shape[1]),
            "seconds": n_samples / sr,
            "soundfont": soundfont.name,
            "seed": seed,
            "gain": gain,
            "production": production,
            "room": asdict(room) if room is not None else None,
            "zero_shot_layout": zero_shot,
            "mixture": MIXTURE_NAME,
            "stems": stems_meta,
        }
        with open(tmp / METADATA_NAME, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=1)
        if track_dir.exists():
            shutil.rmtree(track_dir)
        os.replace(tmp, track_dir)
    except BaseException as err:  # a full disk, an interruption: no half-written track is left
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, (OSError, sf.LibsndfileError)):  # libsndfile: "System error."
            raise OutputError(write_failure(track_dir, err)) from None
        raise
    return {
        "track": name,
        "split": split,
        "piece": info["piece"],
        "soundfont": soundfont.name,
        "fine": [s["fine"] for s in stems_meta.values()],
        "cpu_s": time.process_time() - t_cpu,
        "seconds": n_samples / sr,
    }


def _sampled_piano(folder: str) -> SampledPiano:
    """The sampled piano of ``folder``, loaded once per process (its notes as they are used)."""
    loaded: dict[str, SampledPiano] = _STATE.setdefault("sampled_pianos", {})
    if folder not in loaded:
        loaded[folder] = SampledPiano(folder, _STATE["sample_rate"])
    return loaded[folder]


def _instrument_meta(plan: _StemPlan, soundfont: Path) -> dict[str, Any]:
    """What rendered a stem, for its metadata: kind, name and, for soundfonts, the preset."""
    kind, where = plan.instrument
    if kind == "sampled piano":
        return {"kind": kind, "name": piano_library_name(Path(where))}
    name = soundfont.name if kind == "soundfont" else Path(where).name
    return {"kind": kind, "name": name, "bank": plan.bank, "program": plan.program}


def _write_float_wav(path: Path, x: np.ndarray, sample_rate: int) -> None:
    """32-bit float WAV of ``x`` ``(samples, channels)`` with a fixed header.

    libsndfile adds a PEAK chunk with a time stamp to float WAV files, which would make two
    renders of the same track differ by a few header bytes; this header has no time stamp.
    """
    channels = x.shape[1]
    data = np.ascontiguousarray(x, dtype="<f4").tobytes()
    block = 4 * channels
    fmt = struct.pack("<HHIIHHH", 3, channels, sample_rate, sample_rate * block, block, 32, 0)
    fact = struct.pack("<I", len(x))
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"fact"
        + struct.pack("<I", len(fact))
        + fact
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )
    with open(path, "wb") as fh:
        fh.write(b"RIFF" + struct.pack("<I", len(body)) + body)


def render_job(job: tuple[int, str, int, str, str]) -> dict[str, Any]:
    """Render one track: ``(index, split, ordinal in its split, track folder, soundfont)``."""
    return _render_track(job)
