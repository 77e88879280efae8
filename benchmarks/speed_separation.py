"""Separation speed and memory of aqsep: the workers and their report sections.

Part of ``benchmarks/separate.py`` (run that; it calls these workers in fresh processes):

* ``separate``: one ``Separator.separate_file`` call (read, chunk, separate, write: the path users
  take) on a generated WAV file: wall time, x real time, peak RSS, U-Net FLOPs and GFLOP/s, and
  where the time goes (``StageTimer``); variants for inference settings;
* ``forward``: one U-Net forward pass, aqsep's exact faster forms against the textbook network;
* ``peak``: the machine's matmul GFLOP/s.

The models have random weights (``save_models``): speed and memory do not depend on their values.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_common import (
    cpu_seconds,
    current_rss_mb,
    find_run,
    mb,
    peak_rss_mb,
    separation_figures,
    set_threads,
)


class StageTimer:
    """Wraps callables to add up their wall time by stage name (for "where the time goes")."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(
        self, owner: Any, name: str, stage: str, on_call: Callable[..., None] | None = None
    ) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return
        timer = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            if on_call is not None:
                on_call(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timer.seconds[stage] = timer.seconds.get(stage, 0.0) + time.perf_counter() - t0
                timer.calls[stage] = timer.calls.get(stage, 0) + 1

        setattr(owner, name, timed)
        had_own = isinstance(owner, type) or name in getattr(owner, "__dict__", {})
        self._undo.append(
            lambda: setattr(owner, name, original) if had_own else delattr(owner, name)
        )

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


def use_textbook_unet() -> None:
    """Run every exact fast layer of :mod:`aqsep.fastforms` as the plain layer of
    :mod:`aqsep.model` it replaces (each is a subclass of it): the U-Net as first written, even in
    a model that :func:`aqsep.fastforms.accelerate` went through (a loaded one)."""
    from aqsep import fastforms

    for fast in (fastforms.TiledZConv2d, fastforms.PhaseConvTranspose2d, fastforms.BatchNormAdaIN):
        fast.forward = fast.__bases__[0].forward  # type: ignore[method-assign]


def work_separate(spec: dict[str, Any]) -> dict[str, Any]:
    """One ``Separator.separate_file`` call on a WAV file, timed, with its peak RSS and FLOPs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    set_threads(spec["threads"])
    import aqsep.audio
    import aqsep.inference
    from aqsep import Separator

    t0 = time.perf_counter()
    sep = Separator(
        spec["model"],
        device="cpu",
        segment=spec.get("segment"),
        overlap=spec["overlap"],
        batch_size=spec["batch_size"],
    )
    model = sep.model
    variant = spec.get("variant", "default")
    if variant == "textbook":
        use_textbook_unet()
    if variant == "channels_last":
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if variant == "bf16":
        plain_mask = model.mask

        def bf16_mask(magnitude: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return plain_mask(magnitude, z).float()

        model.mask = bf16_mask  # type: ignore[method-assign]
    latent = sep.class_latent("drums")
    load_s = time.perf_counter() - t0
    rss_loaded = current_rss_mb()

    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    timer = StageTimer()
    timer.wrap(
        model,
        "mask",
        "U-Net (mask)",
        on_call=lambda mag, z: shapes.append((tuple(mag.shape), tuple(z.shape))),
    )
    for name, stage in (
        ("resample", "resampling (soxr)"),
        ("stft", "STFT"),
        ("istft", "iSTFT"),
        ("map_mask", "mask to native grid"),
        ("to_mono_batch", "mono downmix"),
    ):
        timer.wrap(aqsep.inference, name, stage)
    timer.wrap(aqsep.audio.AudioReader, "read", "file read")
    timer.wrap(aqsep.audio.AtomicAudioWriter, "write", "file write")

    out_dir = Path(spec["out_dir"])
    c0, t0 = cpu_seconds(), time.perf_counter()
    sep.separate_file(
        spec["wav"], out_dir, latent, residual=spec.get("residual", False), force=True
    )
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    peak = peak_rss_mb()
    timer.restore()

    # FLOPs of the U-Net for one batch of the shape the run used; linear in the batch size.
    n_chunks = sum(s[0][0] for s in shapes)
    mag_shape, z_shape = max(shapes, key=lambda s: s[0][0])
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.mask(torch.rand(mag_shape), torch.randn(z_shape))
    flops_per_chunk = counter.get_total_flops() / mag_shape[0]
    total_flops = flops_per_chunk * n_chunks
    audio_s = spec["seconds"]
    stages = {k: round(v, 3) for k, v in sorted(timer.seconds.items(), key=lambda kv: -kv[1])}
    stages["other (Python, overlap-add, copies)"] = round(wall - sum(timer.seconds.values()), 3)
    unet_s = timer.seconds.get("U-Net (mask)", float("nan"))
    return {
        **separation_figures(audio_s, wall, cpu, peak, rss_loaded, load_s),
        "chunks": n_chunks,
        "chunk_batch_shape": list(mag_shape),
        "unet_gflop_per_chunk": round(flops_per_chunk / 1e9, 3),
        "gflops_overall": round(total_flops / wall / 1e9, 2),
        "gflops_unet_only": round(total_flops / unet_s / 1e9, 2),
        "stages_s": stages,
    }


def work_forward(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one U-Net forward pass on a chunk batch: aqsep's (the exact fast layers, as a loaded
    model has them), the textbook one (the plain network of aqsep/model.py, same weights), bfloat16
    autocast."""
    import copy

    import torch

    set_threads(spec["threads"])
    from aqsep.config import preset
    from aqsep.fastforms import accelerate
    from aqsep.model import QuerySeparator

    torch.manual_seed(0)
    plain = QuerySeparator(preset(spec["preset"])).eval()
    model = accelerate(copy.deepcopy(plain))
    sep, textbook, a = model.separator, plain.separator, model.config.audio
    frames = a.segment_frames + (-a.segment_frames) % sep.stride_product
    x = torch.log1p(torch.rand(spec["batch"], 1, a.n_bins, frames))
    z = torch.randn(spec["batch"], model.latent_dim)
    out: dict[str, Any] = {"batch_shape": list(x.shape)}
    with torch.inference_mode():
        reference = sep(x, z)
        variants = {
            "fp32": lambda: sep(x, z),
            "fp32, textbook": lambda: textbook(x, z),
        }
        if spec.get("bf16"):
            variants["bf16 autocast"] = lambda: _autocast(lambda: sep(x, z))
        for name, fn in variants.items():
            result = fn()  # warm-up, and the error against the shipped forward
            reps = spec["reps"] if name != "bf16 autocast" else 1
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            out[name] = {
                "s": round(min(times), 4),
                "max_abs_diff": float((result.float() - reference).abs().max()),
            }
    return out


def work_peak(spec: dict[str, Any]) -> dict[str, Any]:
    """The machine's float32 (and, where native, bfloat16) matmul GFLOP/s at this thread count."""
    import torch

    set_threads(spec["threads"])
    n = 2048
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if dtype == torch.bfloat16 and not bf16_native():
            continue
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        out[f"matmul_{name}_gflops"] = round(2 * n**3 / min(times) / 1e9, 1)
    out["bf16_native"] = bf16_native()
    return out


def _autocast(fn: Callable[[], Any]) -> Any:
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16):
        return fn()


def bf16_native() -> bool:
    """Whether oneDNN has native bfloat16 kernels on this CPU (AVX512-BF16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def save_models(folder: Path, presets: list[str]) -> dict[str, Path]:
    import torch

    from aqsep.config import preset
    from aqsep.model import QuerySeparator
    from aqsep.release import ClassLatent, save_model

    paths = {}
    for name in presets:
        torch.manual_seed(0)
        model = QuerySeparator(preset(name))
        latent = torch.randn(model.latent_dim).tolist()
        paths[name] = save_model(
            folder / f"model-{name}",
            model,
            {"drums": ClassLatent(latent)},
            {"note": "random weights, for benchmarks"},
        )
    return paths


# ---------------------------------------------------------------------------------------------
# Report sections
# ---------------------------------------------------------------------------------------------
def markdown_separation(res: dict[str, Any]) -> list[str]:
    """The table of separation runs (one target), by preset and input length."""
    s = res["sections"]
    lines: list[str] = []
    sep = s.get("separate", []) + s.get("long", [])
    if sep:
        lines += [
            "### Separation, one target",
            "",
            "| preset | input | wall (s) | speed (x real time) | CPU (s) | peak RSS (MB) | RSS after load (MB) | "
            "U-Net GFLOP/chunk | chunks | GFLOP/s overall | GFLOP/s in U-Net | other load |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sep:
            if "error" in r:
                lines.append(f"| {r['label']} | failed | | | | | | | | | | |")
                continue
            p, length = r["label"].split(" ", 1)
            lines.append(
                f"| {p} | {length} | {r['wall_s']:.1f} | {r['x_realtime']:.1f} | {r['cpu_s']:.1f} | "
                f"{mb(r['peak_rss_mb'])} | {mb(r['rss_after_load_mb'])} | {r['unet_gflop_per_chunk']:.2f} | "
                f"{r['chunks']} | {r['gflops_overall']:.1f} | {r['gflops_unet_only']:.1f} | "
                f"{r['other_load_cores']:.2f} |"
            )
        lines += [
            "",
            "GFLOP/s overall = U-Net FLOPs of the run (FLOPs of one chunk batch counted with "
            "`torch.utils.flop_counter.FlopCounterMode`, times the number of chunks over the batch size) "
            "/ wall time; in U-Net = the same FLOPs / time spent inside the U-Net.",
            "",
        ]
    return lines


def markdown_stages(res: dict[str, Any]) -> list[str]:
    """Where the time of a 3-min separation goes, stage by stage."""
    prof = [
        r
        for r in res["sections"].get("separate", [])
        if r.get("label", "").endswith("3 min") and "error" not in r
    ]
    lines: list[str] = []
    if prof:
        stages = list(dict.fromkeys(k for r in prof for k in r["stages_s"]))
        lines += [
            "### Where the time goes (3-min file, seconds)",
            "",
            "| stage | " + " | ".join(f"`{r['label'].split()[0]}`" for r in prof) + " |",
            "|---|" + "---:|" * len(prof),
        ]
        for st_name in stages:
            lines.append(
                f"| {st_name} | "
                + " | ".join(f"{r['stages_s'].get(st_name, 0):.2f}" for r in prof)
                + " |"
            )
        lines.append("| **total** | " + " | ".join(f"{r['wall_s']:.2f}" for r in prof) + " |")
        lines += [
            "",
            "STFT counts both the mono STFT at the model's rate and the stereo STFT at the input's rate; "
            '"other" is the wall time outside the timed functions (overlap-add, copies, Python).',
            "",
        ]
    return lines


def markdown_settings(res: dict[str, Any]) -> list[str]:
    """Inference settings on the 3-min file."""
    s = res["sections"]
    lines: list[str] = []
    if s.get("settings"):
        lines += [
            "### Inference settings (3-min file, one target)",
            "",
            "Applied from the benchmark without changing aqsep: `batch_size`/`overlap` through `Separator`; "
            "channels_last converts the model's weights; *textbook U-Net* runs the U-Net as first written "
            "(z tiled and concatenated, every convolution as its PyTorch module, AdaIN as instance norm then "
            "scale and bias): same weights and output as aqsep's exact faster forms (aqsep/fastforms.py).",
            "",
            "| preset | setting | wall (s) | speed (x real time) | peak RSS (MB) | other load |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for p in ("cpu", "paper"):
            base = find_run(s.get("separate", []), f"{p} 3 min")
            if base:
                lines.append(
                    f"| {p} | default (batch {res['settings']['batch_size']}, overlap "
                    f"{res['settings']['overlap']}) | {base['wall_s']:.1f} | {base['x_realtime']:.1f} | "
                    f"{mb(base['peak_rss_mb'])} | {base['other_load_cores']:.2f} |"
                )
            for r in s["settings"]:
                if r["label"].startswith(p + " "):
                    name = r["label"].split(", ", 1)[1]
                    if "error" in r:
                        lines.append(f"| {p} | {name} | failed | | | |")
                    else:
                        lines.append(
                            f"| {p} | {name} | {r['wall_s']:.1f} | {r['x_realtime']:.1f} | "
                            f"{mb(r['peak_rss_mb'])} | {r['other_load_cores']:.2f} |"
                        )
        lines.append("")
    return lines


def markdown_forward(res: dict[str, Any]) -> list[str]:
    """One U-Net forward pass: the shipped forms, the textbook form, bfloat16."""
    s = res["sections"]
    lines: list[str] = []
    if s.get("forward"):
        lines += [
            "### One U-Net forward pass (a batch of chunks, seconds)",
            "",
            "| preset | batch shape | fp32 | fp32, textbook | bf16 autocast | max abs difference of the mask |",
            "|---|---|---:|---:|---:|---|",
        ]
        for r in s["forward"]:
            if "error" in r:
                continue
            bf = r.get("bf16 autocast")
            diffs = ", ".join(
                f"{k}: {r[k]['max_abs_diff']:.1e}"
                for k in ("fp32, textbook", "bf16 autocast")
                if k in r
            )
            lines.append(
                f"| {r['label'].split()[1]} | {tuple(r['batch_shape'])} | {r['fp32']['s']:.3f} | "
                f"{r['fp32, textbook']['s']:.3f} | {bf['s'] if bf else 'not run'} | {diffs} |"
            )
        lines.append("")
    return lines
