#!/usr/bin/env bash
# The README's main command: install aqsep, then separate the bundled example with the shipped
# model three ways (by a query clip, by class, by a time range of the mixture), write the stems
# and a spectrogram figure to separated/, and print each estimate's SDR next to the mixture's.
#
#   bash scripts/example.sh              # install, then separate
#   SKIP_INSTALL=1 bash scripts/example.sh
#   MODEL=path/to/model bash scripts/example.sh   # another released model (default: the shipped one)
#
# The example (aqsep/examples/, see its README.md) is 8 s of a synthesized test-split track, its
# true stems per class, and 3 s query clips from another test track; the model never trained on
# either track, their pieces or their soundfont.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EX=aqsep/examples
OUT=${OUT:-separated}

if [ -z "${SKIP_INSTALL:-}" ]; then
  bash scripts/install.sh
fi

# tcmalloc, a faster C allocator: a whole `aqsep separate` of a 3-min file took 13-15 % less wall
# time with it on a shared 2-core machine (1.15-1.18x, median of paired runs; docs/benchmarks.md,
# python benchmarks/process_speed.py); timed in process, without start-up, 2.5 s against 3.4 s
# (the allocator table there). Not the halving once claimed.
TCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
if [ -e "$TCMALLOC" ]; then
  export LD_PRELOAD="$TCMALLOC${LD_PRELOAD:+:$LD_PRELOAD}"
fi

MODEL_ARGS=()
if [ -n "${MODEL:-}" ]; then
  MODEL_ARGS=(--model "$MODEL")
fi
# The range of mixture.wav where one class dominates (a mix still: nothing plays alone in it).
RANGE=$($PY -c "import json; r = json.load(open('$EX/metadata.json'))['query_range']; print(f\"{r['start']:g}:{r['end']:g}\")")

run() { echo "+ $*"; "$@"; }
# 1. by a query clip: a drum loop from another track
run $PY -m aqsep separate "$EX/mixture.wav" --query "$EX/query_drums.wav" --name drums_by_query -o "$OUT" --force ${MODEL_ARGS[@]+"${MODEL_ARGS[@]}"}
# 2. by class: the model's stored mean latent of "vocals", and the rest of the mix beside it.
# The example's "vocals" are a synthetic voice patch, which the default model's Spleeter stage
# takes for an instrument (it knows real singing): the fast model, trained on such renders, is
# the one for them (unless MODEL is set)
VOCAL_MODEL=("${MODEL_ARGS[@]+"${MODEL_ARGS[@]}"}")
if [ -z "${MODEL:-}" ]; then
  VOCAL_MODEL=(--model fast)
fi
run $PY -m aqsep separate "$EX/mixture.wav" --target vocals --residual -o "$OUT" --force "${VOCAL_MODEL[@]}"
# 3. by a time range of the mixture itself
run $PY -m aqsep separate "$EX/mixture.wav" --query-range "$RANGE" --name by_range -o "$OUT" --force ${MODEL_ARGS[@]+"${MODEL_ARGS[@]}"}

# Figure and scores (museval v4: median SDR over 1 s windows, estimate vs the true stem).
$PY - "$EX" "$OUT/mixture" <<'EOF'
import json
import sys
from pathlib import Path

import numpy as np

from aqsep.audio import read_audio
from aqsep.evaluate import score
from aqsep.plots import save_spectrograms

ex, out = Path(sys.argv[1]), Path(sys.argv[2])
meta = json.loads((ex / "metadata.json").read_text())
mix, sr = read_audio(ex / "mixture.wav")
true = {c: read_audio(ex / f)[0] for c, f in meta["mixture"]["references"].items()}
true["other"] = mix - sum(true.values())
rng = meta["query_range"]
rng_name = f"range {rng['start']:g}-{rng['end']:g} s"


def sdr(est: np.ndarray, cls: str) -> float:
    # the mixture as an estimate of every source (aqsep evaluate's "mixture" reference)
    est_rest = mix if est is mix else None
    return float(np.nanmedian(score(true[cls], mix - true[cls], est, sr, est_rest=est_rest)["SDR"]))


rows = [("drums", "query clip query_drums.wav", "drums_by_query.wav"),
        ("vocals", "class vocals", "vocals.wav"),
        (rng["dominant_class"], rng_name, "by_range.wav")]
print(f"\nSDR in dB (median over 1 s windows) vs the true stem of {ex / 'mixture.wav'}:")
print(f"  {'target':<7} {'separated by':<30} {'estimate':>8} {'mixture':>8}")
estimates = {}
for cls, how, name in rows:
    est = read_audio(out / name)[0]
    estimates[name] = est
    print(f"  {cls:<7} {how:<30} {sdr(est, cls):8.2f} {sdr(mix, cls):8.2f}")

query, qsr = read_audio(ex / "query_drums.wav")
save_spectrograms(out.parent / "example.png", [
    ("mixture.wav (input)", mix, sr),
    ("query_drums.wav (query clip, from another track)", query, qsr),
    ("drums_by_query.wav (estimate)", estimates["drums_by_query.wav"], sr),
    ("true drums of the mixture (reference)", true["drums"], sr),
    ("vocals.wav (estimate by class; the fast model unless MODEL is set)", estimates["vocals.wav"], sr),
], title="aqsep: the bundled example separated with the shipped model", max_khz=8)
print(f"\nstems in {out}/, figure in {out.parent / 'example.png'}")
EOF
