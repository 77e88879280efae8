"""Query-net, AdaIN, the U-Net Separator, and the QuerySeparator that wires them.

Shapes: spectrogram tensors are ``(batch, 1, freq, frames)`` with ``freq = n_bins`` (512 by
default). Both networks consume compressed magnitudes (:func:`aqsep.transforms.features`); the
separator returns a sigmoid mask that the caller applies to the *linear* mixture magnitude
(docs/paper.md sections 3 and 4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from aqsep.config import ModelConfig, PretrainedSeparatorConfig, QueryNetConfig, SeparatorConfig
from aqsep.pretrained import ClassVoteGate, SpleeterSeparator
from aqsep.transforms import features


class Posterior(NamedTuple):
    """Diagonal Gaussian q(z | query): mean and log-variance, each ``(batch, latent_dim)``."""

    mu: torch.Tensor
    logvar: torch.Tensor

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised sample ``mu + sigma * eps`` (differentiable in mu and logvar)."""
        eps = torch.randn(
            self.mu.shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype
        )
        return self.mu + torch.exp(0.5 * self.logvar) * eps


class QueryNet(nn.Module):
    """Encodes a query spectrogram into q(z | query) [paper: "6 CNN and GRU layer"].

    Six blocks of Conv2d -> InstanceNorm2d -> LeakyReLU(0.2), stride (2, 2) on odd blocks and
    (2, 1) on even ones; the remaining (channels x freq) per frame feed a bidirectional GRU whose
    final states map linearly to mu and log-variance.
    """

    def __init__(self, config: QueryNetConfig, *, n_bins: int) -> None:
        super().__init__()
        assert len(config.channels) == 6, "the paper's Query-net has 6 conv layers"
        blocks: list[nn.Module] = []
        in_ch, freq = 1, n_bins
        for i, out_ch in enumerate(config.channels):
            stride = (2, 2) if i % 2 == 0 else (2, 1)
            blocks += [
                nn.Conv2d(
                    in_ch,
                    out_ch,
                    config.kernel_size,
                    stride=stride,
                    padding=config.kernel_size // 2,
                ),
                nn.InstanceNorm2d(out_ch, affine=True),
                nn.LeakyReLU(0.2),
            ]
            in_ch, freq = out_ch, (freq + 1) // 2
        self.convs = nn.Sequential(*blocks)
        self.gru = nn.GRU(in_ch * freq, config.gru_hidden, batch_first=True, bidirectional=True)
        self.to_mu = nn.Linear(2 * config.gru_hidden, config.latent_dim)
        self.to_logvar = nn.Linear(2 * config.gru_hidden, config.latent_dim)

    def forward(self, spec: torch.Tensor) -> Posterior:
        """``(batch, 1, freq, frames)`` compressed magnitude (:func:`~aqsep.transforms.features`)
        -> :class:`Posterior`."""
        h = self.convs(spec)  # (batch, channels, freq', frames')
        h = h.flatten(1, 2).transpose(1, 2)  # (batch, frames', channels * freq')
        _, last = self.gru(h)  # (2, batch, hidden): final state of each direction
        summary = torch.cat([last[0], last[1]], dim=-1)
        return Posterior(self.to_mu(summary), self.to_logvar(summary))


class AdaIN(nn.Module):
    """Adaptive instance normalisation: ``gamma(z) * (h - mean) / std + beta(z)``.

    Each decoder block has its own linear map from z to (gamma, beta), initialised so that
    gamma = 1 and beta = 0 (the identity after normalisation).
    """

    eps = 1e-5  # as nn.InstanceNorm2d

    def __init__(self, channels: int, latent_dim: int) -> None:
        super().__init__()
        self.to_scale_bias = nn.Linear(latent_dim, 2 * channels)
        nn.init.zeros_(self.to_scale_bias.weight)
        with torch.no_grad():
            self.to_scale_bias.bias.copy_(torch.cat([torch.ones(channels), torch.zeros(channels)]))

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``(batch, channels, freq, frames)`` and z ``(batch, latent_dim)`` -> the shape of ``h``."""
        gamma, beta = self.to_scale_bias(z).to(h.dtype).chunk(2, dim=-1)
        normed = F.instance_norm(h, eps=self.eps)
        return gamma[..., None, None] * normed + beta[..., None, None]


class LatentConv2d(nn.Module):
    """The convolution of ``concat(x, z tiled over (freq, frames))``: the latent enters the
    U-Net as ``latent_dim`` constant input channels [paper].

    Its weight ``(out_channels, in_channels + latent_dim, k, k)`` and bias are those of the
    ``nn.Conv2d`` over the concatenation, initialised as that layer is.
    """

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int,
        padding: int,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d(
            in_channels + latent_dim, out_channels, kernel_size, stride=stride, padding=padding
        )
        self.weight, self.bias = conv.weight, conv.bias
        self.in_channels, self.latent_dim, self.out_channels = in_channels, latent_dim, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``(batch, in_channels, freq, frames)`` and z ``(batch, latent_dim)`` ->
        ``(batch, out_channels, freq / stride, frames / stride)``."""
        tiled = z[:, :, None, None].expand(-1, -1, *x.shape[-2:]).to(x.dtype)
        return F.conv2d(
            torch.cat([x, tiled], dim=1),
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels} + {self.latent_dim} latent, {self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        )


class UNetSeparator(nn.Module):
    """U-Net that predicts a sigmoid mask for the mixture, conditioned on z in two ways:
    z tiled over (freq, frames) and concatenated to the input channels, and AdaIN in every
    decoder block [paper].

    The first layer of ``encoder[0]`` is a :class:`LatentConv2d` (it takes z too); the layers
    are PyTorch's own elsewhere. :func:`aqsep.fastforms.accelerate` replaces some of them by
    exact faster forms with the same parameters.
    """

    def __init__(self, config: SeparatorConfig, *, latent_dim: int) -> None:
        super().__init__()
        assert len(config.channels) == 6, "six encoder blocks, as in Jansson et al. 2017"
        k, pad = config.kernel_size, config.kernel_size // 2
        self.encoder = nn.ModuleList()
        in_ch = 1
        for i, out_ch in enumerate(config.channels):
            conv: nn.Module = (
                LatentConv2d(in_ch, latent_dim, out_ch, k, stride=2, padding=pad)
                if i == 0
                else nn.Conv2d(in_ch, out_ch, k, stride=2, padding=pad)
            )
            layers: list[nn.Module] = [conv]
            if i > 0:  # no normalisation on the first layer
                layers.append(nn.InstanceNorm2d(out_ch, affine=True))
            layers.append(nn.LeakyReLU(0.2))
            self.encoder.append(nn.Sequential(*layers))
            in_ch = out_ch
        enc = config.channels
        self.deconvs = nn.ModuleList()
        self.adains = nn.ModuleList()
        self.dropouts = nn.ModuleList()
        for i, out_ch in enumerate(reversed(enc[:-1])):
            in_ch = enc[-1] if i == 0 else 2 * enc[-1 - i]  # previous decoder output + skip
            self.deconvs.append(
                nn.ConvTranspose2d(in_ch, out_ch, k, stride=2, padding=pad, output_padding=1)
            )
            self.adains.append(AdaIN(out_ch, latent_dim))
            drop = config.dropout if i < config.dropout_layers else 0.0
            self.dropouts.append(nn.Dropout2d(drop) if drop > 0 else nn.Identity())
        self.to_mask = nn.ConvTranspose2d(2 * enc[0], 1, k, stride=2, padding=pad, output_padding=1)
        self.stride_product = 2 ** len(enc)
        self.padding = pad  # of every (transposed) convolution

    def forward(self, spec: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Mask in [0, 1].

        Args:
            spec: ``(batch, 1, freq, frames)`` compressed mixture magnitude; ``freq`` and
                ``frames`` must be multiples of 64 (see :meth:`QuerySeparator.mask`, which pads).
            z: ``(batch, latent_dim)``.
        Returns:
            ``(batch, 1, freq, frames)`` mask.
        """
        first = self.encoder[0]
        assert isinstance(first, nn.Sequential)
        skips = [first[1:](first[0](spec, z))]  # the first convolution takes z as well
        for block in self.encoder[1:]:
            skips.append(block(skips[-1]))
        h = skips.pop()
        for i, (deconv, adain, drop) in enumerate(
            zip(self.deconvs, self.adains, self.dropouts, strict=True)
        ):
            if i > 0:
                h = torch.cat([h, skips.pop()], dim=1)
            h = drop(F.relu(adain(deconv(h), z)))
        h = torch.cat([h, skips.pop()], dim=1)
        return torch.sigmoid(self.to_mask(h))


class QuerySeparator(nn.Module):
    """The whole model: Query-net Q and Separator S, with spectrogram-level helpers.

    The networks never see waveforms; :mod:`aqsep.inference` handles STFT, chunking and
    resampling, and :mod:`aqsep.train` the losses.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.query_net = QueryNet(config.query, n_bins=config.audio.n_bins)
        sep = config.separator
        self.separator: UNetSeparator | SpleeterSeparator
        if isinstance(sep, PretrainedSeparatorConfig):
            self.separator = SpleeterSeparator(
                latent_dim=config.query.latent_dim,
                audio_channels=sep.audio_channels,
                widths=sep.channels,
                branches=sep.branches,
                dropout=sep.dropout,
                encoder_film=sep.encoder_film,
            )
        else:
            self.separator = UNetSeparator(sep, latent_dim=config.query.latent_dim)
        self.vocal_stage: SpleeterSeparator | None = None
        self.gate: ClassVoteGate | None = None
        stage = config.vocal_stage
        if stage is not None:
            self.vocal_stage = SpleeterSeparator(
                latent_dim=config.query.latent_dim,
                audio_channels=stage.audio_channels,
                widths=stage.channels,
                branches=stage.branches,
                conditioned=False,
            )
            self.gate = ClassVoteGate(config.query.latent_dim, stage.gate_classes)

    @property
    def latent_dim(self) -> int:
        return self.config.query.latent_dim

    def encode(self, magnitude: torch.Tensor) -> Posterior:
        """Query magnitude ``(batch, bins, frames)`` (bins >= n_bins, linear) -> posterior."""
        return self.query_net(self.query_input(magnitude))

    def query_input(self, magnitude: torch.Tensor) -> torch.Tensor:
        """The Query-net's input ``(batch, 1, n_bins, frames)`` from a linear magnitude
        ``(batch, bins, frames)``."""
        return features(magnitude[:, None, : self.config.audio.n_bins])

    def mask(self, magnitude: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Mixture magnitude -> mask of the same shape, on the separator's front-end
        (``config.separator_audio``).

        The magnitude is ``(batch, bins, frames)`` for a mono separator and ``(batch, channels,
        bins, frames)`` for one of ``config.separator_channels`` channels. Frames are zero-padded
        to a multiple of 64 for the U-Net and cropped back; bins above the separator's ``n_bins``
        (up to Nyquist) reuse the mask of the highest modelled bin.
        """
        n_bins, step = self.config.separator_audio.n_bins, self.separator.stride_product
        if self.config.pretrained:  # Spleeter's U-Nets read raw magnitude
            return _padded(lambda x: self.separator(x, z), magnitude, n_bins, step)

        # the paper's U-Net reads log1p, one channel
        def net(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return _padded(lambda x: self.separator(features(x), z), x, n_bins, step)

        return net(magnitude[:, None], z)[:, 0]

    def stage_share(self, magnitude: torch.Tensor) -> torch.Tensor:
        """The vocal stage's vocal mask ``r`` (Spleeter 2-stems') of a mixture magnitude
        ``(batch, channels, bins, frames)`` on the stage's front-end (``config.vocal_stage.audio``),
        of the same shape; padded and extended as :meth:`mask`."""
        stage = self.vocal_stage
        assert stage is not None and self.config.vocal_stage is not None, "no vocal stage"
        n_bins = self.config.vocal_stage.audio.n_bins
        return _padded(stage.vocal_share, magnitude, n_bins, stage.stride_product)

    def side(self, z: torch.Tensor) -> torch.Tensor:
        """The vocal stage's gate ``g(z)`` ``(batch,)``: 1 takes the stage's vocals, 0 its
        accompaniment narrowed by the separator's mask: ``g r + (1 - g) (1 - r) m``."""
        assert self.gate is not None, "no vocal stage"
        return self.gate(z)

    def forward(self, mixture: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Estimated target magnitude: ``mask(mixture, z) * mixture``, of the mixture's shape."""
        return self.mask(mixture, z) * mixture


def _padded(
    net: Callable[[torch.Tensor], torch.Tensor], spec: torch.Tensor, n_bins: int, step: int
) -> torch.Tensor:
    """``net`` (a mask of its input's shape) on ``spec (..., bins, frames)``: the first ``n_bins``
    bins, frames zero-padded to a multiple of ``step`` and cropped back; bins above ``n_bins``
    (up to Nyquist) reuse the mask of the highest modelled bin."""
    bins, frames = spec.shape[-2:]
    x = spec[..., :n_bins, :]
    pad = (-frames) % step
    if pad:
        x = F.pad(x, (0, pad))
    m = net(x)[..., :frames]
    if bins > n_bins:
        m = torch.cat([m, m[..., -1:, :].expand(*m.shape[:-2], bins - n_bins, -1)], dim=-2)
    return m
