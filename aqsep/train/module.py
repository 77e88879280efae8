"""The Lightning module: STFT on the training device, the objective, Adam with step decay, SDR
validation, and the parameter groups of a pretrained separator.

The datasets return waveforms; the STFT runs inside the module, on the training device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from aqsep.config import ModelConfig, TrainConfig
from aqsep.fastforms import accelerate
from aqsep.losses import kl_loss, latent_loss, reconstruction_loss
from aqsep.model import Posterior, QuerySeparator
from aqsep.train.objective import training_losses, weighted_loss
from aqsep.transforms import istft, stft


def is_conditioning(name: str) -> bool:
    """A parameter a pretrained separator adds to Spleeter's layers (z taps, FiLM maps, gate)."""
    return name.startswith("separator.") and any(
        part in name for part in ("z_taps", "films.", "gate.")
    )


class QueryTraining(L.LightningModule):
    """The training engine: STFT on device, losses, Adam with step decay, SDR validation."""

    def __init__(self, model_config: dict[str, Any], train_config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model_config = ModelConfig.from_dict(model_config)
        self.train_config = TrainConfig.from_dict(train_config)
        # the exact fast layers (the same parameters and keys; tests/test_model.py)
        self.model = accelerate(QuerySeparator(self.model_config))
        if self.train_config.freeze_query:
            self.model.query_net.requires_grad_(False)
        if self.train_config.freeze_pretrained:
            for name, p in self.model.separator.named_parameters():
                p.requires_grad_(is_conditioning(f"separator.{name}"))
        self.wall_time_before = 0.0  # seconds trained before this process (resumed runs)
        self._started: float | None = None

    # -- helpers
    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` -> complex ``(batch, bins, frames)`` on the separator's front-end,
        always in float32; ``(batch, channels, bins, frames)`` for a multichannel separator (the
        mono excerpt on every channel)."""
        audio = self.model_config.separator_audio
        with torch.autocast(wave.device.type, enabled=False):
            spec = stft(wave.float(), audio.n_fft, audio.hop_length)
        channels = self.model_config.separator_channels
        return spec if channels == 1 else spec[:, None].expand(-1, channels, -1, -1)

    def query_magnitude(self, wave: torch.Tensor) -> torch.Tensor | None:
        """The Query-net's input magnitude ``(batch, bins, frames)`` of an excerpt at the
        separator's rate, or None where the two front-ends are one.

        The excerpt stays at its rate: an STFT whose window and hop last as many seconds as the
        Query-net's gives the same bins, ``ratio`` times as large (``ratio`` = the rate's ratio).
        """
        mc = self.model_config
        if not mc.pretrained:
            return None
        qa, sa = mc.audio, mc.separator_audio
        ratio = sa.sample_rate / qa.sample_rate
        n_fft, hop = round(qa.n_fft * ratio), round(qa.hop_length * ratio)
        with torch.autocast(wave.device.type, enabled=False):
            spec = stft(wave.float(), n_fft, hop)[:, : qa.n_fft // 2 + 1]
        return spec.abs() / ratio

    def requery(
        self, mix_spec: torch.Tensor, length: int
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """An estimate's magnitude -> its Query-net input (the mixture's phase, the channels'
        mean, back to a waveform, :meth:`query_magnitude`); the identity for one front-end."""
        mc = self.model_config
        if not mc.pretrained:
            return lambda m: m
        sa = mc.separator_audio
        phase = mix_spec / mix_spec.abs().clamp_min(1e-8)

        def convert(magnitude: torch.Tensor) -> torch.Tensor:
            spec = (magnitude * phase[: magnitude.shape[0]]).mean(dim=1)
            wave = istft(spec, sa.n_fft, sa.hop_length, length)
            query = self.query_magnitude(wave)
            assert query is not None
            return query

        return convert

    def wall_time(self) -> float:
        running = 0.0 if self._started is None else time.monotonic() - self._started
        return self.wall_time_before + running

    # -- training
    def on_train_start(self) -> None:
        self._started = time.monotonic()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.train_config.freeze_query:
            self.model.query_net.eval()
        mix_spec = self.spectrogram(batch["mixture"])
        mixture = mix_spec.abs()
        target = self.spectrogram(batch["target"]).abs()
        losses = training_losses(
            self.model,
            mixture,
            target,
            self.train_config,
            query=self.query_magnitude(batch["target"]),
            requery=self.requery(mix_spec, batch["mixture"].shape[-1]),
        )
        size = mixture.shape[0]
        self.log("train/loss", losses["loss"].detach(), prog_bar=True, batch_size=size)
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in losses.items() if k != "loss"}, batch_size=size
        )
        self.log("train/first_excerpt", batch["index"][0].double(), batch_size=size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=size)  # type: ignore[union-attr]
        return losses["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        import fast_bss_eval

        audio = self.model_config.separator_audio
        length = batch["mixture"].shape[-1]
        mix_spec = self.spectrogram(batch["mixture"])
        mixture, target = mix_spec.abs(), self.spectrogram(batch["target"]).abs()
        query = self.query_magnitude(batch["target"])
        posterior = self.model.encode(target if query is None else query)
        mask = self.model.mask(mixture, posterior.mu).float()
        gen = torch.Generator(device="cpu").manual_seed(int(batch["index"][0]))
        z = torch.randn(posterior.mu.shape, generator=gen).to(mixture.device)
        requery = self.requery(mix_spec, length)
        reencoded = self.model.encode(requery(self.model(mixture, z))).mu.float()
        rec = reconstruction_loss(mask * mixture, target)
        kl = kl_loss(Posterior(posterior.mu.float(), posterior.logvar.float()))
        latent = latent_loss(z, reencoded)
        loss = weighted_loss(self.train_config, rec, kl, latent)
        with torch.autocast(mixture.device.type, enabled=False):
            estimate = istft(mask * mix_spec, audio.n_fft, audio.hop_length, length)
            if estimate.dim() == 3:  # (batch, channels, samples) of a multichannel separator
                estimate = estimate.mean(dim=1)
            reference = batch["target"].double()[:, None]
            sdr = fast_bss_eval.sdr(reference, estimate.double()[:, None], clamp_db=100)[:, 0]
            sdr_mix = fast_bss_eval.sdr(
                reference, batch["mixture"].double()[:, None], clamp_db=100
            )[:, 0]
        size = mixture.shape[0]
        values = {
            "loss": loss,
            "rec": rec,
            "kl": kl,
            "latent": latent,
            "sdr": torch.nan_to_num(sdr).mean(),
            "sdr_mixture": torch.nan_to_num(sdr_mix).mean(),
        }
        self.log_dict(
            {f"val/{k}": v.float() for k, v in values.items()}, batch_size=size, sync_dist=True
        )
        self.log(
            "val_sdr",
            values["sdr"].float(),
            batch_size=size,
            sync_dist=True,
            prog_bar=True,
            logger=False,
        )

    def configure_optimizers(self) -> Any:
        tc = self.train_config
        trained = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        conditioning = [p for n, p in trained if is_conditioning(n)]
        groups = [{"params": [p for n, p in trained if not is_conditioning(n)], "lr": tc.lr}]
        if conditioning:
            groups.append({"params": conditioning, "lr": tc.lr * tc.conditioning_lr_scale})
        optimizer = torch.optim.Adam(groups, lr=tc.lr, betas=(tc.betas[0], tc.betas[1]))
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=tc.lr_decay_every, gamma=tc.lr_decay_gamma
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["aqsep_wall_time"] = self.wall_time()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.wall_time_before = float(checkpoint.get("aqsep_wall_time", 0.0))
