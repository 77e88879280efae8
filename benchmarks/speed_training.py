"""Training speed of aqsep (excerpts per second): the worker and its report section.

Part of ``benchmarks/separate.py`` (run that; it calls ``work_train`` in a fresh process): one
training step (forward with the STFT, the three losses, backward, Adam) at batch 16 on in-memory
excerpts, in float32 and, where the CPU has native kernels, with bfloat16 autocast; variants for
``--latent-fraction``, ``--kernel-size 3`` and the textbook U-Net.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

from bench_common import cpu_seconds, mb, peak_rss_mb, set_threads
from speed_separation import use_textbook_unet


def work_train(spec: dict[str, Any]) -> dict[str, Any]:
    """Excerpts per second of training at batch ``spec["batch"]``.

    Times ``aqsep.train.QueryTraining.training_step`` under a Lightning ``Trainer`` (forward with
    the STFT, the three losses, backward, Adam, the trainer's own per-step work) on in-memory
    excerpts, so data loading (loader workers: reading stems and the sampling strategy) is not
    included. If ``aqsep.train`` is missing, times an equivalent step written here.
    """
    set_threads(spec["threads"])
    if spec.get("variant") == "textbook":
        use_textbook_unet()
    try:
        from aqsep.train import QueryTraining  # noqa: F401
    except ImportError:
        return _train_equivalent(spec)
    return _train_lightning(spec)


def _train_lightning(spec: dict[str, Any]) -> dict[str, Any]:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Dataset

    from aqsep.config import TRAIN_PRESETS, preset
    from aqsep.train import QueryTraining

    torch.manual_seed(0)
    cfg, tcfg = preset(spec["preset"]), TRAIN_PRESETS[spec["preset"]]
    if spec.get("variant") == "latent fraction 0.5":
        tcfg = dataclasses.replace(tcfg, latent_fraction=0.5)
    if spec.get("variant") == "separator kernel 3":  # aqsep train --kernel-size 3
        cfg = dataclasses.replace(cfg, separator=dataclasses.replace(cfg.separator, kernel_size=3))
    module = QueryTraining(cfg.to_dict(), tcfg.to_dict())
    batch, samples = spec["batch"], cfg.audio.segment_samples
    total = spec["warmup"] + spec["steps"]
    gen = torch.Generator().manual_seed(0)
    target_w = 0.1 * torch.randn(batch, samples, generator=gen)
    mixture_w = target_w + 0.1 * torch.randn(batch, samples, generator=gen)

    class Excerpts(Dataset):
        def __len__(self) -> int:
            return total * batch

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {
                "mixture": mixture_w[i % batch],
                "target": target_w[i % batch],
                "index": torch.tensor(i, dtype=torch.int64),
            }

    marks: list[tuple[float, float]] = []

    class Clock(L.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            marks.append((time.perf_counter(), cpu_seconds()))

        def on_train_batch_end(self, *args: Any) -> None:
            marks.append((time.perf_counter(), cpu_seconds()))

    precision: Any = "bf16-mixed" if spec["precision"] == "bf16" else "32-true"
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=total,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[Clock()],
    )
    loader = DataLoader(Excerpts(), batch_size=batch, num_workers=0)
    trainer.fit(module, train_dataloaders=loader)
    pairs = list(zip(marks[0::2], marks[1::2], strict=False))[spec["warmup"] :]
    times = [e[0] - b[0] for b, e in pairs]
    cpus = [e[1] - b[1] for b, e in pairs]
    median = statistics.median(times)
    return {
        "batch": batch,
        "precision": spec["precision"],
        "step_s": [round(t, 3) for t in times],
        "step_cpu_s": [round(c, 3) for c in cpus],
        "median_step_s": round(median, 3),
        "excerpts_per_s": round(batch / median, 2),
        "excerpt_s": round(cfg.audio.segment_seconds, 3),
        "latent_fraction": tcfg.latent_fraction,
        "parameters": sum(p.numel() for p in module.model.parameters()),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "step": "`aqsep.train.QueryTraining.training_step` under a Lightning Trainer "
        f"(precision {precision}), in-memory excerpts",
    }


def _train_equivalent(spec: dict[str, Any]) -> dict[str, Any]:
    """The training step written out, for a tree without ``aqsep.train``."""
    import torch

    from aqsep.config import TRAIN_PRESETS, preset
    from aqsep.fastforms import accelerate
    from aqsep.losses import kl_loss, latent_loss, reconstruction_loss
    from aqsep.model import QuerySeparator
    from aqsep.transforms import stft

    torch.manual_seed(0)
    cfg, tcfg = preset(spec["preset"]), TRAIN_PRESETS[spec["preset"]]
    model = accelerate(QuerySeparator(cfg).train())
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr, betas=tcfg.betas)
    batch, a = spec["batch"], cfg.audio
    gen = torch.Generator().manual_seed(0)
    target_w = 0.1 * torch.randn(batch, a.segment_samples, generator=gen)
    mixture_w = target_w + 0.1 * torch.randn(batch, a.segment_samples, generator=gen)
    bf16 = spec["precision"] == "bf16"
    query_params = list(model.query_net.parameters())

    def step() -> tuple[float, float]:
        c0, t0 = cpu_seconds(), time.perf_counter()
        mix, tgt = (
            stft(mixture_w, a.n_fft, a.hop_length).abs(),
            stft(target_w, a.n_fft, a.hop_length).abs(),
        )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            posterior = model.encode(tgt)
            estimate = model(mix, posterior.sample())
            loss_r = reconstruction_loss(estimate.float(), tgt)
            loss_kl = kl_loss(type(posterior)(posterior.mu.float(), posterior.logvar.float()))
            z_prior = torch.randn(batch, model.latent_dim)
            for p in query_params:  # L_latent reaches the separator through Q, not Q's weights
                p.requires_grad_(False)
            reencoded = model.encode(model(mix, z_prior)).mu
            for p in query_params:
                p.requires_grad_(True)
            loss_latent = latent_loss(z_prior, reencoded.float())
            loss = (
                tcfg.lambda_rec * loss_r
                + tcfg.lambda_kl * loss_kl
                + tcfg.lambda_latent * loss_latent
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0, cpu_seconds() - c0

    for _ in range(spec["warmup"]):
        step()
    measured = [step() for _ in range(spec["steps"])]
    times = [w for w, _ in measured]
    median = statistics.median(times)
    return {
        "batch": batch,
        "precision": spec["precision"],
        "step_s": [round(t, 3) for t in times],
        "step_cpu_s": [round(c, 3) for _, c in measured],
        "median_step_s": round(median, 3),
        "excerpts_per_s": round(batch / median, 2),
        "excerpt_s": round(a.segment_seconds, 3),
        "parameters": sum(p.numel() for p in model.parameters()),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "step": "equivalent step written in benchmarks/separate.py (aqsep.train not importable)",
    }


# ---------------------------------------------------------------------------------------------
# Report section
# ---------------------------------------------------------------------------------------------
def markdown_training(res: dict[str, Any]) -> list[str]:
    """Training speed (excerpts per second) at batch 16."""
    m, s = res["machine"], res["sections"]
    lines: list[str] = []
    if s.get("train"):
        tr0 = next((r for r in s["train"] if "error" not in r), None)
        lines += [
            "### Training speed (batch 16)",
            "",
            f"Excerpts of {tr0['excerpt_s'] if tr0 else '?'} s at the model's rate. Timed: "
            + (tr0["step"] if tr0 else "?")
            + ": STFT, forward, the three losses (L_R, L_KL, L_latent with re-encoding), backward, Adam; median over "
            "the timed steps after warm-up. Data loading is not included. *L_latent share*: the share of each "
            "batch's mixtures that also take the L_latent path (`TrainConfig.latent_fraction`, `--latent-fraction`; "
            "1 by default); *separator kernel 3*: `aqsep train --kernel-size 3` (3x3 instead of 5x5 "
            "kernels in the U-Net, a smaller network than the shipped one); *textbook*: the U-Net as first "
            "written (see the inference settings).",
            "",
            "| preset | precision | variant | L_latent share | parameters | median step (s) | CPU per step (s) | "
            "excerpts/s | peak RSS (MB) | other load |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in s["train"]:
            if "error" in r:
                lines.append(f"| {r['label']} | failed | | | | | | | | |")
                continue
            p = r["label"].split()[1]
            variant = r["label"].split(", ", 1)[1] if ", " in r["label"] else "as shipped"
            lines.append(
                f"| {p} | {r['precision']} | {variant} | {r.get('latent_fraction', 1.0):g} | "
                f"{r['parameters']:,} | {r['median_step_s']:.2f} | "
                f"{statistics.median(r['step_cpu_s']):.2f} | {r['excerpts_per_s']:.1f} | "
                f"{mb(r['peak_rss_mb'])} | {r['other_load_cores']:.2f} |"
            )
        if not m.get("bf16_native"):
            lines += [
                "",
                "bfloat16 autocast is not timed for training: without native kernels it is many times "
                "slower than float32 on this CPU (see the forward pass above).",
            ]
        lines.append("")
    return lines
