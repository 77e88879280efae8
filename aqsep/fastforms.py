"""Exact, faster forms of layers of the U-Net, and :func:`accelerate`, which puts them in place.

The network of :mod:`aqsep.model` is written with plain operations. Each class here replaces one of
its layers, holds that layer's parameters under the same names (so a state dict and a released
``model.safetensors`` are the same either way) and computes the same thing up to float rounding
(``tests/test_model.py`` compares values and gradients):

* :class:`TiledZConv2d` (``tiled_z``) replaces :class:`~aqsep.model.LatentConv2d`: the first
  convolution of ``concat(spec, z tiled over the plane)`` without building the tiled tensor (the
  latent part is ``R @ (sum_c z_c W_c) @ C.T``, see :func:`inside_taps`);
* :class:`PhaseConvTranspose2d` (``phase_deconv``) replaces the one-channel transposed output
  convolution, as a stride-1 convolution followed by ``pixel_shuffle``
  (:func:`phase_conv_transpose2d`), where no gradient is taken;
* :class:`BatchNormAdaIN` (``adain``) replaces :class:`~aqsep.model.AdaIN`: instance norm then
  the per-example scale and bias, as one batch norm of ``(1, batch * channels, ...)``.

``benchmarks/fast_forms.py`` measures each one alone against the plain layer (forward and
backward, the ``cpu`` preset's shapes, batch 16; docs/benchmarks.md). On the 2-core AVX2 machine
(median of 25 alternating rounds, plain / fast) ``tiled_z`` won 34x forward and 19x backward,
``adain`` 1.9x and 2.2x; ``phase_deconv`` won forward (1.7x) but lost backward (0.17x), so its
layer runs the plain operation whenever autograd is on. A fourth form, :func:`phase_conv2d` (the
stride-2 one-channel convolution of the spectrogram as phases), lost both ways (0.62x, 0.64x): no
layer uses it; it stays for the benchmark and other machines.

Loading a released model (:func:`aqsep.release.load_model`), training
(:class:`aqsep.train.QueryTraining`) and the ONNX export (:func:`aqsep.onnx.exportable`) apply
:func:`accelerate`; a model built with ``QuerySeparator(config)`` is the plain network until it is
passed to :func:`accelerate`.
"""

from __future__ import annotations

from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from aqsep.model import AdaIN, LatentConv2d, UNetSeparator

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def accelerate(model: ModuleT) -> ModuleT:
    """Replace, in place, the layers of every :class:`~aqsep.model.UNetSeparator` in ``model`` by
    their exact fast forms, and return ``model``.

    The parameters stay the same objects (an optimizer made before still updates them), under the
    same names; no random numbers are drawn. Layers already fast are left as they are.
    """
    for sep in [m for m in model.modules() if isinstance(m, UNetSeparator)]:
        first = sep.encoder[0]
        assert isinstance(first, nn.Sequential)
        if type(first[0]) is LatentConv2d:
            first[0] = TiledZConv2d.replacing(first[0])
        for i, adain in enumerate(sep.adains):
            if type(adain) is AdaIN:
                sep.adains[i] = BatchNormAdaIN.replacing(adain)
        if type(sep.to_mask) is nn.ConvTranspose2d:
            sep.to_mask = PhaseConvTranspose2d.replacing(sep.to_mask)
    return model


def _holding(fast: ModuleT, plain: nn.Module) -> ModuleT:
    """``fast`` (made on the meta device: no memory, no random draws) given ``plain``'s own
    parameters and submodules, and its training mode."""
    for name, param in plain.named_parameters(recurse=False):
        setattr(fast, name, param)
    for name, child in plain.named_children():
        setattr(fast, name, child)
    return fast.train(plain.training)


# --- the layers, each beside the plain layer it replaces ------------------------------------------


class TiledZConv2d(LatentConv2d):
    """:class:`~aqsep.model.LatentConv2d` without the tiled tensor.

    The spectrogram channels alone go through the convolution; the latent channels are constant
    over the plane, so their part is a plane of ones (zero padding included) convolved with the
    per-example kernel ``sum_c z_c W_c``, which is ``R @ kernel @ C.T`` where ``R`` and ``C`` mark
    the taps that fall inside the plane for each output row and column.
    """

    @classmethod
    def replacing(cls, plain: LatentConv2d) -> TiledZConv2d:
        with torch.device("meta"):
            fast = cls(
                plain.in_channels,
                plain.latent_dim,
                plain.out_channels,
                plain.kernel_size,
                stride=plain.stride,
                padding=plain.padding,
            )
        return _holding(fast, plain)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        w_x, w_z = self.weight[:, : self.in_channels], self.weight[:, self.in_channels :]
        out = F.conv2d(x, w_x, self.bias, stride=self.stride, padding=self.padding)
        kernels = torch.einsum("bc,ocij->boij", z.to(w_z.dtype), w_z).to(out.dtype)
        rows = inside_taps(x.shape[-2], self.kernel_size, self.stride, self.padding).to(out)
        cols = inside_taps(x.shape[-1], self.kernel_size, self.stride, self.padding).to(out)
        return out + rows @ kernels @ cols.T


class PhaseConvTranspose2d(nn.ConvTranspose2d):
    """A stride-2 transposed convolution (square odd kernel, ``padding = kernel // 2``,
    ``output_padding=1``) as :func:`phase_conv_transpose2d` while autograd is off (its backward
    pass is the slower one: with autograd on, the plain operation runs)."""

    @classmethod
    def replacing(cls, plain: nn.ConvTranspose2d) -> PhaseConvTranspose2d:
        k = plain.kernel_size[0]
        assert plain.kernel_size == (k, k) and k % 2 == 1, "a square odd kernel"
        assert plain.stride == (2, 2) and plain.output_padding == (1, 1)
        assert plain.padding == (k // 2, k // 2) and plain.dilation == (1, 1) and plain.groups == 1
        with torch.device("meta"):
            fast = cls(
                plain.in_channels,
                plain.out_channels,
                k,
                stride=2,
                padding=k // 2,
                output_padding=1,
                bias=plain.bias is not None,
            )
        return _holding(fast, plain)

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None or torch.is_grad_enabled():
            return super().forward(input, output_size)
        padding = self.padding
        assert isinstance(padding, tuple)  # numbers, as replacing() made it
        return phase_conv_transpose2d(input, self.weight, self.bias, padding=padding[0])


class BatchNormAdaIN(AdaIN):
    """:class:`~aqsep.model.AdaIN` as one batch norm of ``(1, batch * channels, ...)`` whose
    affine is each example's (gamma, beta).

    Under a tracer (the ONNX export, :mod:`aqsep.onnx`) the plain form runs: a trace would record
    the batch size of the reshape as a constant.
    """

    @classmethod
    def replacing(cls, plain: AdaIN) -> BatchNormAdaIN:
        linear = plain.to_scale_bias
        with torch.device("meta"):
            fast = cls(linear.out_features // 2, linear.in_features)
        return _holding(fast, plain)

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            return super().forward(h, z)
        gamma, beta = self.to_scale_bias(z).to(h.dtype).chunk(2, dim=-1)
        b, c = h.shape[:2]
        flat = h.reshape(1, b * c, *h.shape[2:])
        out = F.batch_norm(
            flat, None, None, gamma.reshape(-1), beta.reshape(-1), training=True, eps=self.eps
        )
        return out.reshape(h.shape)


# --- the phase convolutions ----------------------------------------------------------------------
# On CPU, a stride-2 convolution with one input channel and a transposed convolution with one
# output channel can be slow; both become a stride-1 convolution over the 2 x 2 "phases" of the
# plane (pixel_unshuffle / pixel_shuffle), with the kernel taps rearranged.


def _phase_selection(kernel_size: int, padding: int, transposed: bool) -> tuple[torch.Tensor, int]:
    """0/1 tensor ``(2, width, kernel_size)`` placing each tap of a stride-2 kernel along one axis
    at (phase, offset), and the lowest offset.

    Convolution: output ``m`` reads input ``2m + i - padding = 2(m + d) + p``, so tap ``i`` sits at
    phase ``p`` of block ``m + d``. Transposed: output ``2m + a`` receives input ``m + d`` through
    tap ``i = a + padding - 2d``.
    """
    places: list[tuple[int, int, int]] = []
    for i in range(kernel_size):
        if transposed:
            places += [(a, (a + padding - i) // 2, i) for a in (0, 1) if (a + padding - i) % 2 == 0]
        else:
            d, p = divmod(i - padding, 2)
            places.append((p, d, i))
    low = min(d for _, d, _ in places)
    width = max(d for _, d, _ in places) - low + 1
    select = torch.zeros(2, width, kernel_size)
    for p, d, i in places:
        select[p, d - low, i] = 1.0
    return select, low


def _conv_padded(
    x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None, low: int
) -> torch.Tensor:
    """Stride-1 convolution whose output ``m`` reads input ``m + low .. m + low + width - 1``
    (zero outside), with the padding inside the convolution where it is symmetric."""
    before, after = -low, kernel.shape[-1] - 1 + low
    if before != after:
        x, before = F.pad(x, (before, after) * 2), 0
    return F.conv2d(x, kernel, bias, padding=before)


def phase_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, padding: int
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride=2, padding=padding)`` for a square odd kernel and even
    ``x`` height and width, as a stride-1 convolution of ``pixel_unshuffle(x, 2)``."""
    out_ch, in_ch, k, _ = weight.shape
    select, low = _phase_selection(k, padding, transposed=False)
    select = select.to(weight)
    kernel = torch.einsum("pdi,qej,ocij->ocpqde", select, select, weight)
    width = select.shape[1]
    # contiguous: an einsum result may have channels-last-like strides, which would make the
    # convolution convert its input to channels-last and back
    kernel = kernel.reshape(out_ch, in_ch * 4, width, width).contiguous()
    return _conv_padded(F.pixel_unshuffle(x, 2), kernel, bias, low)


def phase_conv_transpose2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, padding: int
) -> torch.Tensor:
    """``F.conv_transpose2d(x, weight, bias, stride=2, padding=padding, output_padding=1)`` for a
    square odd kernel with ``padding = kernel // 2``, as a stride-1 convolution followed by
    ``pixel_shuffle(., 2)``."""
    in_ch, out_ch, k, _ = weight.shape
    select, low = _phase_selection(k, padding, transposed=True)
    select = select.to(weight)
    kernel = torch.einsum("adi,bej,coij->oabcde", select, select, weight)
    width = select.shape[1]
    kernel = kernel.reshape(out_ch * 4, in_ch, width, width).contiguous()  # as in phase_conv2d
    bias4 = None if bias is None else bias.repeat_interleave(4)
    return F.pixel_shuffle(_conv_padded(x, kernel, bias4, low), 2)


def inside_taps(size: int, kernel_size: int, stride: int, padding: int) -> torch.Tensor:
    """``(outputs, kernel_size)`` 0/1: whether tap ``i`` of output ``o`` reads inside ``0..size-1``
    for a zero-padded convolution along one axis."""
    outputs = (size + 2 * padding - kernel_size) // stride + 1
    index = stride * torch.arange(outputs)[:, None] + torch.arange(kernel_size) - padding
    return ((index >= 0) & (index < size)).float()
