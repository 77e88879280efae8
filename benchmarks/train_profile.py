"""Where the time of one training step goes, and whether the phase forms would pay elsewhere.

Part 1 profiles training steps of a preset (batch 16, the same step as ``aqsep train``:
STFT, the three losses, backward, Adam) with ``torch.profiler`` and prints the share of time
per kind of operator, and the convolutions' achieved GFLOP/s (FLOPs counted with
``torch.utils.flop_counter``). Part 2 times forward + backward of each stride-2 layer of the
separator (encoder convolutions and decoder transposed convolutions, batch 32 as in a training
step) as PyTorch's own layer and as the stride-1 "phase" form that aqsep uses for the one-channel
layers (:func:`aqsep.fastforms.phase_conv2d`, :func:`aqsep.fastforms.phase_conv_transpose2d`).

Run from the repository root, ideally with tcmalloc preloaded as in benchmarks/separate.py:

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python benchmarks/train_profile.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from aqsep.config import TRAIN_PRESETS, preset
from aqsep.fastforms import accelerate, phase_conv2d, phase_conv_transpose2d
from aqsep.model import QuerySeparator
from aqsep.train import training_losses
from aqsep.transforms import stft

KINDS = {
    "convolution": ("conv", "mkldnn"),
    "normalisation": ("batch_norm",),
    "matmul and GRU": ("mm", "bmm", "addmm", "gru", "linear"),
    "copies, cat, (un)shuffle": ("copy", "cat", "shuffle", "contiguous", "pad"),
}


def _kind(op: str) -> str:
    name = op.removeprefix("aten::")
    for kind, keys in KINDS.items():
        if any(k in name for k in keys):
            return kind
    return "elementwise and other"


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def profile_step(preset_name: str, batch: int, steps: int) -> dict[str, Any]:
    cfg, tc = preset(preset_name), TRAIN_PRESETS[preset_name]
    torch.manual_seed(0)
    model = accelerate(QuerySeparator(cfg).train())  # as training runs it
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=tc.betas)
    audio = cfg.audio
    gen = torch.Generator().manual_seed(0)
    target = 0.1 * torch.randn(batch, audio.segment_samples, generator=gen)
    mixture = target + 0.1 * torch.randn(batch, audio.segment_samples, generator=gen)

    def step() -> None:
        mix = stft(mixture, audio.n_fft, audio.hop_length).abs()
        tgt = stft(target, audio.n_fft, audio.hop_length).abs()
        loss = training_losses(model, mix, tgt, tc)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step_ms = _median_ms(step, steps)
    with FlopCounterMode(display=False) as counter:
        step()
    conv_flops = sum(
        n for op, n in counter.get_flop_counts()["Global"].items() if "convolution" in str(op)
    )
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    shares: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            kind = _kind(event.key)
            shares[kind] = shares.get(kind, 0.0) + event.self_cpu_time_total
    total = sum(shares.values())
    # the profiler times each operator on the calling thread: wall seconds per step
    conv_s = shares.get("convolution", 0.0) / 1e6 / steps
    return {
        "preset": preset_name,
        "batch": batch,
        "median_step_ms": round(step_ms, 1),
        "excerpts_per_s": round(1000 * batch / step_ms, 2),
        "cpu_share": {k: round(v / total, 3) for k, v in sorted(shares.items())},
        "conv_gflop_per_step": round(conv_flops / 1e9, 2),
        "conv_gflops_achieved": round(conv_flops / 1e9 / conv_s, 1),
    }


def _layer_ms(
    layer: Callable[..., torch.Tensor], shapes: tuple[tuple[int, ...], ...], repeats: int
) -> float:
    """Forward + backward of ``layer(x, weight, bias)`` with random tensors of ``shapes``
    (x, weight, bias, output gradient)."""
    x, weight, bias = (torch.randn(*shape, requires_grad=True) for shape in shapes[:3])
    grad = torch.randn(*shapes[3])
    return _median_ms(lambda: layer(x, weight, bias).backward(grad), repeats)


def layer_timings(preset_name: str, batch: int, repeats: int) -> list[dict[str, Any]]:
    cfg = preset(preset_name)
    freq, frames = cfg.audio.n_bins, cfg.audio.segment_frames
    k, pad, enc = cfg.separator.kernel_size, cfg.separator.kernel_size // 2, cfg.separator.channels
    conv = partial(F.conv2d, stride=2, padding=pad)
    deconv = partial(F.conv_transpose2d, stride=2, padding=pad, output_padding=1)
    rows = []
    for i in range(1, len(enc)):  # encoder block i reads block i-1's output
        c_in, c_out, h, w = enc[i - 1], enc[i], freq >> i, frames >> i
        shapes = (
            (batch, c_in, h, w),
            (c_out, c_in, k, k),
            (c_out,),
            (batch, c_out, h // 2, w // 2),
        )
        rows.append(
            {
                "layer": f"encoder {i}: conv {c_in}->{c_out} at {h}x{w}",
                "pytorch_ms": _layer_ms(conv, shapes, repeats),
                "phase_ms": _layer_ms(partial(phase_conv2d, padding=pad), shapes, repeats),
            }
        )
    depth = len(enc)
    for i in range(depth - 1):  # decoder block i: previous output (+ skip) -> enc[-2 - i]
        c_in = enc[-1] if i == 0 else 2 * enc[-1 - i]
        c_out, h, w = enc[-2 - i], freq >> (depth - i), frames >> (depth - i)
        shapes = ((batch, c_in, h, w), (c_in, c_out, k, k), (c_out,), (batch, c_out, 2 * h, 2 * w))
        rows.append(
            {
                "layer": f"decoder {i}: transposed conv {c_in}->{c_out} at {h}x{w}",
                "pytorch_ms": _layer_ms(deconv, shapes, repeats),
                "phase_ms": _layer_ms(
                    partial(phase_conv_transpose2d, padding=pad), shapes, repeats
                ),
            }
        )
    return [
        {**r, "pytorch_ms": round(r["pytorch_ms"], 1), "phase_ms": round(r["phase_ms"], 1)}
        for r in rows
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu", choices=sorted(TRAIN_PRESETS))
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--steps", type=int, default=4, help="profiled training steps (default 4)")
    ap.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    step = profile_step(args.preset, 16, args.steps)
    print(
        f"{args.preset} preset, batch 16, {args.threads} threads: median step "
        f"{step['median_step_ms']:.0f} ms ({step['excerpts_per_s']:.1f} excerpts/s)"
    )
    print("share of operator time (wall, calling thread):")
    for kind, share in sorted(step["cpu_share"].items(), key=lambda kv: -kv[1]):
        print(f"  {kind:28s} {100 * share:5.1f} %")
    print(
        f"convolutions: {step['conv_gflop_per_step']:.1f} GFLOP per step at "
        f"{step['conv_gflops_achieved']:.1f} GFLOP/s"
    )
    layers = layer_timings(args.preset, 32, 5)
    print("stride-2 layers of the separator, forward + backward at batch 32 (ms):")
    print(f"  {'layer':48s} {'PyTorch':>8s} {'phase form':>11s}")
    for r in layers:
        print(f"  {r['layer']:48s} {r['pytorch_ms']:8.1f} {r['phase_ms']:11.1f}")
    if args.out:
        args.out.write_text(json.dumps({"step": step, "layers": layers}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
