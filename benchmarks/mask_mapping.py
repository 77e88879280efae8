"""The exact path of ``aqsep.inference.map_mask`` for coinciding grids, against interpolation.

At 44.1 kHz (twice the shipped model's 22.05 kHz) the input's STFT grid and the model's coincide:
the same frequency of every bin below the model's top bin, the same time of every frame.
``map_mask`` then takes the mask as it is; ``interpolate_mask`` (the plain form, every grid) finds
the same positions up to float rounding and interpolates. This script times both, in one process,
alternating (``--rounds`` pairs), at normal priority:

* one call on the shapes of a default separation (4 chunks, the model's 513 bins x 256 frames
  mapped onto 1025 bins x 256 frames), median of many calls;
* a whole ``Separator.separate_file`` of a generated stereo 44.1 kHz file (``--seconds``), with
  ``aqsep.inference.map_mask`` swapped for ``interpolate_mask`` in the second of each pair;

and reports the medians, the median of the paired ratios and the largest difference between
the two outputs in 16-bit steps. Run from the repository root:

    python benchmarks/mask_mapping.py                 # 3-min file, 5 pairs
    python benchmarks/mask_mapping.py --seconds 30 --rounds 3
"""

from __future__ import annotations

import aqsep  # noqa: F401  (before torch, as `aqsep separate` does: idle threads sleep)

# isort: split
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import write_test_file


def time_calls(fn, mask: torch.Tensor, kwargs: dict, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn(mask, **kwargs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default=None, help="released model (default: the shipped one)")
    args = ap.parse_args(argv)

    import aqsep.inference as inference
    from aqsep.api import Separator
    from aqsep.audio import read_audio

    sep = Separator(args.model, device="cpu")
    a = sep.model.config.audio
    n_fft, hop = inference.native_grid(sep.model, 44100)
    grids = {
        "src_sr": a.sample_rate,
        "src_n_fft": a.n_fft,
        "src_hop": a.hop_length,
        "dst_sr": 44100,
        "dst_n_fft": n_fft,
        "dst_hop": hop,
        "dst_frames": a.segment_frames,
    }
    mask = torch.rand(4, a.n_fft // 2 + 1, a.segment_frames)
    exact, plain = inference.map_mask, inference.interpolate_mask
    call = {"exact": [], "interpolate": []}
    for _ in range(args.rounds):
        call["exact"].append(time_calls(exact, mask, grids, 50))
        call["interpolate"].append(time_calls(plain, mask, grids, 50))
    diff = float((exact(mask, **grids) - plain(mask, **grids)).abs().max())
    print(
        f"one call, mask {tuple(mask.shape)} -> {tuple(exact(mask, **grids).shape)}: exact "
        f"{1e3 * statistics.median(call['exact']):.2f} ms, interpolate "
        f"{1e3 * statistics.median(call['interpolate']):.2f} ms; largest difference {diff:.2e}"
    )

    whole = {"exact": [], "interpolate": []}
    with tempfile.TemporaryDirectory() as tmp:
        song = write_test_file(Path(tmp) / "song.wav", args.seconds)
        z = sep.class_latent("vocals")
        outputs = {}
        for k in range(args.rounds):
            order = ["exact", "interpolate"] if k % 2 == 0 else ["interpolate", "exact"]
            for name in order:
                inference.map_mask = exact if name == "exact" else plain  # type: ignore[assignment]
                t0 = time.perf_counter()
                result = sep.separate_file(
                    song, Path(tmp) / name, z, name="vocals", force=True, bits="32f"
                )
                whole[name].append(time.perf_counter() - t0)
                outputs[name] = result.outputs["vocals"]
        inference.map_mask = exact  # type: ignore[assignment]
        a_out, b_out = (read_audio(outputs[n])[0] for n in ("exact", "interpolate"))
        steps = float(np.abs(a_out - b_out).max()) * 32768
    ratios = [i / e for e, i in zip(whole["exact"], whole["interpolate"], strict=True)]
    e, i = statistics.median(whole["exact"]), statistics.median(whole["interpolate"])
    print(
        f"separate_file, {args.seconds:g} s stereo 44.1 kHz, {args.rounds} pairs: exact "
        f"{e:.2f} s, interpolate {i:.2f} s (medians); interpolate / exact {statistics.median(ratios):.3f} "
        f"(median of pairs; {min(ratios):.3f}-{max(ratios):.3f}); the exact path saves "
        f"{100 * (1 - e / i):.1f} % of the wall time; largest output difference "
        f"{steps:.3f} 16-bit steps"
    )
    print("all runs (s):", {k: [round(x, 2) for x in v] for k, v in whole.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
