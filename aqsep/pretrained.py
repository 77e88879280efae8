"""The pretrained separator: U-Nets in the layout of Spleeter 2-stems, steered by the query latent.

Spleeter (Hennequin et al. 2020, JOSS 5(50) 2154; MIT) separates vocals and accompaniment with two
U-Nets of the Jansson et al. 2017 family. Each reads the stereo magnitude ``(channels, frames,
bins)`` of a 44.1 kHz STFT (n_fft 4096, hop 1024, the first 1024 bins) in raw scale, and gives one
sigmoid mask per channel; the two masks are combined as a ratio of their squares. Those networks
have learnt what real music sounds like, which no data set on our machines could teach, so this
separator keeps their layers and their weights (imported once at training time,
:mod:`aqsep.spleeter_import`) and adds the paper's two conditionings on z (docs/paper.md section 4):

1. **z tiled and concatenated to the input** of each U-Net: the first convolution gets
   ``latent_dim`` more input channels, whose taps start at zero.
2. **A z-driven affine in every decoder block**, where the paper puts AdaIN: after each frozen
   BatchNorm, ``h * (1 + W_g z) + W_b z`` (FiLM) with W_g, W_b zero at the start. With
   ``encoder_film`` the encoder blocks get one too.

Where this departs from the paper's AdaIN, and why: AdaIN normalises each example's channels by
their own statistics; Spleeter's layers were trained after BatchNorm with stored statistics, and
normalising by a patch's own statistics loses what they learnt (a probe: vocals at +0.05 dB with
batch statistics on one song's patches against +8.2 with the stored ones). So the statistics stay
frozen (the normalisation of a patch never depends on another patch, as in AdaIN) and z drives
the scale and bias that follow, which is AdaIN's conditioning.

**Which network is the target.** With two branches, ``r = m_v^2 / (m_v^2 + m_a^2)`` is the vocal
share that Spleeter 2-stems computes, and a gate ``g(z) = sigmoid(w . z + b)`` chooses the side:
``mask = g r + (1 - g) (1 - r)``. At the start (zero conditioning, a gate at 0 or 1) the model *is*
Spleeter 2-stems, vocals or accompaniment; training teaches z to narrow either side to what the
query sounds like (drums out of the accompaniment, a sub-class). With one branch (Spleeter's vocal
network alone, half the cost) the same gate chooses ``m`` or ``1 - m``.

Shapes: the separator takes a linear magnitude ``(batch, channels, bins, frames)`` with ``bins =
audio.n_bins`` and ``frames`` a multiple of 64, and returns the mask of that shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # Spleeter's BatchNorm epsilon
RATIO_EPS = 1e-10  # Spleeter's in the ratio of squared masks


class FiLM(nn.Module):
    """``h * (1 + scale(z)) + shift(z)`` per channel, both maps zero at the start (the identity)."""

    def __init__(self, channels: int, latent_dim: int) -> None:
        super().__init__()
        self.to_scale_shift = nn.Linear(latent_dim, 2 * channels)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        scale, shift = self.to_scale_shift(z).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
        return h * (1 + scale) + shift


def _same_pad(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's 'same' padding of a 5x5, stride-2 convolution on even sizes: 1 before, 2 after."""
    return F.pad(x, (1, 2, 1, 2))


class SpleeterUNet(nn.Module):
    """One U-Net in Spleeter's layout, conditioned on z.

    Encoder: 6 x [pad, Conv2d 5x5 stride 2, BatchNorm, LeakyReLU(0.2)]; the skips are the
    convolutions' outputs *before* their BatchNorm. Decoder: 6 x [ConvTranspose2d 5x5 stride 2,
    crop, ReLU, BatchNorm, FiLM(z)], dropout after the first three, each fed the previous block
    concatenated with its skip; the last block gives one channel, and a Conv2d 4x4 with dilation 2
    maps it to one mask logit per audio channel.
    """

    def __init__(
        self,
        *,
        latent_dim: int,
        audio_channels: int = 2,
        widths: Sequence[int] = (16, 32, 64, 128, 256, 512),
        dropout: float = 0.5,
        dropout_layers: int = 3,
        encoder_film: bool = True,
        conditioned: bool = True,
    ) -> None:
        super().__init__()
        assert len(widths) == 6, "Spleeter's U-Net has six encoder blocks"
        self.latent_dim = latent_dim
        self.enc_convs = nn.ModuleList()
        self.enc_norms = nn.ModuleList()
        in_ch = audio_channels
        for width in widths:
            self.enc_convs.append(nn.Conv2d(in_ch, width, 5, stride=2))
            self.enc_norms.append(nn.BatchNorm2d(width, eps=BN_EPS))
            in_ch = width
        # the taps of the tiled z in the first convolution, zero at the start (the first
        # convolution of concat(spec, tiled z), split by input channel: see _first_conv)
        self.z_taps = (
            nn.Parameter(torch.zeros(widths[0], latent_dim, 5, 5)) if conditioned else None
        )
        self.enc_films = nn.ModuleList(
            [FiLM(w, latent_dim) for w in widths] if encoder_film and conditioned else []
        )
        outs = [*reversed(widths[:-1]), 1]  # 256, 128, 64, 32, 16, 1
        self.dec_convs = nn.ModuleList()
        self.dec_norms = nn.ModuleList()
        self.dec_films = nn.ModuleList()
        for i, out_ch in enumerate(outs):
            in_ch = widths[-1] if i == 0 else 2 * widths[-1 - i]  # previous output + skip
            self.dec_convs.append(nn.ConvTranspose2d(in_ch, out_ch, 5, stride=2))
            self.dec_norms.append(nn.BatchNorm2d(out_ch, eps=BN_EPS))
            if conditioned:
                self.dec_films.append(FiLM(out_ch, latent_dim))
        self.dropout = nn.Dropout(dropout)
        self.dropout_layers = dropout_layers
        self.to_logits = nn.Conv2d(1, audio_channels, 4, dilation=2, padding=3)

    def _first_conv(self, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """The first convolution of ``concat(x, z tiled over (frames, bins))``, without the tiled
        tensor: the z channels contribute ``sum_c z_c W_c`` convolved with a map of ones (zero in
        the padding), one single-channel convolution per example (exact, by linearity)."""
        conv = self.enc_convs[0]
        assert isinstance(conv, nn.Conv2d)
        out = conv(_same_pad(x))
        if self.z_taps is None or z is None:
            return out
        batch = x.shape[0]
        weight = torch.einsum("b l, o l h w -> b o h w", z.to(x.dtype), self.z_taps.to(x.dtype))
        ones = _same_pad(x.new_ones(1, 1, *x.shape[-2:]))
        tiled = F.conv2d(ones, weight.reshape(-1, 1, 5, 5), stride=2)  # (1, batch * out, ...)
        return out + tiled.reshape(batch, -1, *tiled.shape[-2:])

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Mask logits.

        Args:
            x: ``(batch, audio_channels, frames, bins)`` linear magnitude (Spleeter's layout),
                ``frames`` and ``bins`` multiples of 64.
            z: ``(batch, latent_dim)``; ignored (and may be None) by an unconditioned network.
        Returns:
            ``(batch, audio_channels, frames, bins)`` logits of the sigmoid mask.
        """
        skips: list[torch.Tensor] = []
        h = x
        for i, (conv, norm) in enumerate(zip(self.enc_convs, self.enc_norms, strict=True)):
            pre = self._first_conv(h, z) if i == 0 else conv(_same_pad(h))
            skips.append(pre)
            h = norm(pre)
            if self.enc_films:
                h = self.enc_films[i](h, z)
            h = F.leaky_relu(h, 0.2)
        h = skips.pop()  # the decoder starts from the last convolution, before its BatchNorm
        for i, (deconv, norm) in enumerate(zip(self.dec_convs, self.dec_norms, strict=True)):
            if i > 0:
                h = torch.cat([skips.pop(), h], dim=1)
            h = deconv(h)[:, :, 1:-2, 1:-2]  # the crop that matches the encoder's padding
            h = norm(F.relu(h))
            if self.dec_films:
                h = self.dec_films[i](h, z)
            if i < self.dropout_layers:
                h = self.dropout(h)
        return self.to_logits(h)


class SideGate(nn.Linear):
    """``g(z) = sigmoid(w . z + b)``, ``(batch,)`` in [0, 1]: 1 picks Spleeter's vocal side of the
    mixture, 0 its accompaniment."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim, 1)
        nn.init.zeros_(self.weight)
        nn.init.constant_(self.bias, 6.0)  # g = 0.998: the vocal side, until aimed or trained

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(super().forward(z))[:, 0]


class ClassVoteGate(nn.Module):
    """``g(z)``, ``(batch,)`` in [0, 1], by a soft vote of the class latents nearest to z: with
    centres ``c_k`` labelled ``v_k`` (1 vocal, 0 not), ``g = sum_k softmax_k(-|z - c_k|^2 / t) v_k``.

    A linear gate cannot tell the vocal classes from their neighbours in a Query-net's latent
    space (synth and mallets lie beside voice) without becoming a step; the vote is exact at every
    class latent and smooth between them (it moves from one side to the other along the path
    between two classes over a stretch set by ``t``).
    """

    centres: torch.Tensor  # (classes, latent_dim)
    vocal: torch.Tensor  # (classes,) 1 or 0
    temperature: torch.Tensor  # ()

    def __init__(self, latent_dim: int, classes: int) -> None:
        super().__init__()
        self.register_buffer("centres", torch.zeros(classes, latent_dim))
        self.register_buffer("vocal", torch.zeros(classes))
        self.register_buffer("temperature", torch.ones(()))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(z.float(), self.centres.float()).square()
        weights = torch.softmax(-d2 / self.temperature.float(), dim=-1)
        return (weights @ self.vocal.float()).to(z.dtype)

    @torch.no_grad()
    def aim(self, latents: torch.Tensor, vocal: torch.Tensor, own: float = 0.98) -> None:
        """Vote with the class latents ``(classes, latent_dim)`` labelled ``vocal`` (``(classes,)``
        bool); the temperature puts the nearest pair of classes of the two sides ``log(own / (1 -
        own))`` logits apart at either centre."""
        self.centres.copy_(latents)
        self.vocal.copy_(vocal.float())
        d2 = torch.cdist(latents[vocal], latents[~vocal]).square().min()
        self.temperature.fill_(float(d2) / math.log(own / (1 - own)))


class SpleeterSeparator(nn.Module):
    """One or two :class:`SpleeterUNet` branches and the gate that chooses the target side.

    ``branches`` 2: Spleeter 2-stems' vocal and accompaniment networks, combined as Spleeter does
    (a ratio of squared masks); 1: the vocal network alone. Unconditioned (``conditioned``
    False), it is Spleeter itself, without z: :meth:`vocal_share` gives its vocal mask, and a
    model that puts it in front of a query-conditioned separator decides the side (the
    ``cascade`` preset, :class:`aqsep.model.QuerySeparator`).
    """

    def __init__(
        self,
        *,
        latent_dim: int,
        audio_channels: int = 2,
        widths: Sequence[int] = (16, 32, 64, 128, 256, 512),
        branches: int = 2,
        dropout: float = 0.5,
        encoder_film: bool = True,
        conditioned: bool = True,
    ) -> None:
        super().__init__()
        assert branches in (1, 2), "one branch (vocals) or two (vocals, accompaniment)"
        self.branches = nn.ModuleList(
            SpleeterUNet(
                latent_dim=latent_dim,
                audio_channels=audio_channels,
                widths=widths,
                dropout=dropout,
                encoder_film=encoder_film,
                conditioned=conditioned,
            )
            for _ in range(branches)
        )
        self.gate = SideGate(latent_dim) if conditioned else None
        self.stride_product = 64

    def train(self, mode: bool = True) -> SpleeterSeparator:
        """As :meth:`nn.Module.train`, but the BatchNorm layers keep their stored statistics (and
        never update them): see the module's docstring."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    @torch.no_grad()
    def aim_gate(self, vocal: torch.Tensor, others: torch.Tensor, margin: float = 4.0) -> None:
        """Set the gate so that the latent ``vocal`` (``(latent_dim,)``) gives logit ``+margin``
        and the mean of ``others`` (``(n, latent_dim)``) ``-margin``: along their difference,
        before any training (so the start is Spleeter's vocals for a vocal query and its
        accompaniment for the others)."""
        assert self.gate is not None, "an unconditioned separator has no gate"
        rest = others.mean(dim=0)
        d = vocal - rest
        w = 2 * margin * d / d.square().sum().clamp_min(1e-12)
        self.gate.weight.copy_(w[None])
        self.gate.bias.fill_(float(margin - w @ vocal))

    def side(self, z: torch.Tensor) -> torch.Tensor:
        """The gate ``g(z)`` in [0, 1], ``(batch,)``: 1 the vocal side, 0 the other."""
        assert self.gate is not None, "an unconditioned separator has no gate"
        return self.gate(z)

    def vocal_share(self, spec: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Spleeter's vocal mask ``r`` of ``spec`` (shapes as :meth:`forward`): the ratio of the
        branches' squared masks, or the one branch's mask."""
        x = spec.transpose(-1, -2)  # Spleeter's (batch, channels, frames, bins)
        masks = [torch.sigmoid(branch(x, z)) for branch in self.branches]
        if len(masks) == 2:
            power_v, power_a = masks[0].square(), masks[1].square()
            share = (power_v + RATIO_EPS / 2) / (power_v + power_a + RATIO_EPS)
        else:
            share = masks[0]
        return share.transpose(-1, -2)

    def forward(self, spec: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Mask in [0, 1]: ``g r + (1 - g) (1 - r)``.

        Args:
            spec: ``(batch, audio_channels, bins, frames)`` linear mixture magnitude, ``bins`` and
                ``frames`` multiples of 64.
            z: ``(batch, latent_dim)``.
        Returns:
            ``(batch, audio_channels, bins, frames)`` mask.
        """
        share = self.vocal_share(spec, z)
        g = self.side(z).to(share.dtype)[:, None, None, None]
        return g * share + (1 - g) * (1 - share)
