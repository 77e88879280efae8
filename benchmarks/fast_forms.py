"""Each exact fast form of the U-Net (``aqsep/fastforms.py``) alone against the plain layer.

For every form, on the shipped ``cpu`` preset's shapes at batch 16 (512 bins x 256 frames, 32
latent dimensions, separator channels 8..256, kernel 5), the script times the forward pass
(no autograd) and the backward pass (``.backward()`` after a forward with autograd) of the fast
and the plain layer, alternating fast and plain in every round (``--rounds``), and reports
the medians and the plain / fast ratio (above 1: the fast form wins). ``adain`` is timed on the
five decoder levels in one call; ``phase_deconv`` as the phase operation itself (its layer runs
the plain one whenever autograd is on), ``phase_conv`` as the function no layer uses. Run from the
repository root:

    nice -n 10 python benchmarks/fast_forms.py --rounds 7
"""

from __future__ import annotations

import aqsep  # noqa: F401  (before torch, as `aqsep separate` does: idle threads sleep)

# isort: split
import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from aqsep import fastforms
from aqsep.config import preset
from aqsep.model import AdaIN, LatentConv2d, UNetSeparator

Case = tuple[Callable[[bool], torch.Tensor], list[torch.Tensor]]


def cases(batch: int) -> dict[str, Case]:
    """Per form: a function of ``fast`` computing it, and the tensors the backward pass reaches."""
    torch.manual_seed(0)
    cfg = preset("cpu")
    sep = UNetSeparator(cfg.separator, latent_dim=cfg.query.latent_dim)
    pad = sep.padding
    bins, frames = cfg.audio.n_bins, cfg.audio.segment_frames
    spec = torch.rand(batch, 1, bins, frames, requires_grad=True)
    z = torch.randn(batch, cfg.query.latent_dim, requires_grad=True)
    first = sep.encoder[0][0]
    assert isinstance(first, LatentConv2d)
    first_fast = fastforms.TiledZConv2d.replacing(first)
    params = [first.weight, first.bias]
    enc = cfg.separator.channels
    h_out = torch.randn(batch, 2 * enc[0], bins // 2, frames // 2, requires_grad=True)
    levels = []  # decoder outputs: channels enc[-2]..enc[0], from 1/32 to 1/2 of the plane
    for depth, ch in zip(range(5, 0, -1), reversed(enc[:-1]), strict=True):
        levels.append(torch.randn(batch, ch, bins >> depth, frames >> depth, requires_grad=True))
    adains = [a for a in sep.adains if isinstance(a, AdaIN)]
    adains_fast = [fastforms.BatchNormAdaIN.replacing(a) for a in adains]
    adain_params = [p for a in adains for p in a.parameters()]

    def tiled_z(fast: bool) -> torch.Tensor:
        return (first_fast if fast else first)(spec, z)

    def phase_conv(fast: bool) -> torch.Tensor:  # the spectrogram channel alone, stride 2
        w = first.weight[:, :1]
        if fast:
            return fastforms.phase_conv2d(spec, w, first.bias, padding=pad)
        return F.conv2d(spec, w, first.bias, stride=2, padding=pad)

    def phase_deconv(fast: bool) -> torch.Tensor:
        if fast:
            w, b = sep.to_mask.weight, sep.to_mask.bias
            return fastforms.phase_conv_transpose2d(h_out, w, b, padding=pad)
        return sep.to_mask(h_out)

    def adain(fast: bool) -> torch.Tensor:
        layers = adains_fast if fast else adains
        outs = [layer(h, z) for layer, h in zip(layers, levels, strict=True)]
        return torch.cat([o.flatten() for o in outs])

    return {
        "tiled_z": (tiled_z, [spec, z, *params]),
        "phase_conv": (phase_conv, [spec, *params]),
        "phase_deconv": (phase_deconv, [h_out, sep.to_mask.weight, sep.to_mask.bias]),
        "adain": (adain, [*levels, z, *adain_params]),
    }


def timed(
    fn: Callable[[bool], torch.Tensor], fast: bool, inputs: list[torch.Tensor]
) -> tuple[float, float]:
    """Seconds of one forward without autograd and of one backward."""
    with torch.no_grad():
        t0 = time.perf_counter()
        fn(fast)
        forward = time.perf_counter() - t0
    out = fn(fast)
    grad = torch.ones_like(out)
    t0 = time.perf_counter()
    out.backward(grad)
    backward = time.perf_counter() - t0
    for t in inputs:
        t.grad = None
    return forward, backward


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)
    all_cases = cases(args.batch)
    times: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    for fn, inputs in all_cases.values():  # one warm-up each
        timed(fn, True, inputs), timed(fn, False, inputs)
    for r in range(args.rounds):
        for name, (fn, inputs) in all_cases.items():
            for fast in (True, False) if r % 2 == 0 else (False, True):
                times.setdefault((name, fast), []).append(timed(fn, fast, inputs))
    print(
        f"batch {args.batch}, cpu preset shapes, {args.rounds} rounds, "
        f"{torch.get_num_threads()} threads; median ms (plain / fast)"
    )
    print(
        f"{'form':14}{'fwd fast':>10}{'fwd plain':>11}{'ratio':>7}{'bwd fast':>10}{'bwd plain':>11}{'ratio':>7}"
    )
    for name in all_cases:
        f = [statistics.median(t[i] for t in times[(name, True)]) * 1e3 for i in (0, 1)]
        p = [statistics.median(t[i] for t in times[(name, False)]) * 1e3 for i in (0, 1)]
        print(
            f"{name:14}{f[0]:10.2f}{p[0]:11.2f}{p[0] / f[0]:7.2f}{f[1]:10.2f}{p[1]:11.2f}{p[1] / f[1]:7.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
