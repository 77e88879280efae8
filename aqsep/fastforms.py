"""Exact, faster forms of parts of the U-Net, the switch that selects them, and the plain network.

Each form computes the same thing as a plain PyTorch operation, with the same weights, up to float
rounding (``tests/test_model.py`` compares values and gradients):

* ``tiled_z``: the first convolution of ``concat(spec, z tiled over the plane)`` without building
  the tiled tensor (the latent part is ``R @ (sum_c z_c W_c) @ C.T``, see :func:`inside_taps`);
* ``phase_conv``: the stride-2 convolution of the one-channel spectrogram as a stride-1
  convolution of its 2 x 2 phases (:func:`phase_conv2d`);
* ``phase_deconv``: the one-channel transposed output convolution as a stride-1 convolution
  followed by ``pixel_shuffle`` (:func:`phase_conv_transpose2d`);
* ``adain``: instance norm then the per-example scale and bias, as one batch norm of
  ``(1, batch * channels, ...)``.

``benchmarks/fast_forms.py`` measures each one alone against its plain operation (forward and
backward, the ``cpu`` preset's shapes, batch 16); :data:`KEPT` lists the forms that won on the
2-core AVX2 machine (docs/benchmarks.md). :data:`enabled` (``AQSEP_PLAIN_FORMS=1`` in the
environment sets it False) turns every form off: the plain operations then run everywhere, as
in :func:`plain_forward`, the network as first written.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from aqsep.model import UNetSeparator

FORMS = ("tiled_z", "phase_conv", "phase_deconv", "adain")
KEPT: frozenset[str] = frozenset({"tiled_z", "phase_deconv", "adain"})
"""The forms used when :data:`enabled`: those that won alone in ``benchmarks/fast_forms.py`` on
the 2-core AVX2 machine (median of 25 alternating rounds, batch 16, plain / fast): ``tiled_z``
34x forward and 19x backward, ``adain`` 1.9x and 2.2x. ``phase_deconv`` won forward (1.7x) but
lost backward (0.17x), so it runs only where no gradient is taken (:func:`output_conv`);
``phase_conv`` lost both ways (0.62x, 0.64x) and is not used."""

enabled: bool = os.environ.get("AQSEP_PLAIN_FORMS", "").strip() in ("", "0")
"""False: the plain operations everywhere (``AQSEP_PLAIN_FORMS=1``, or set at run time)."""


def use(form: str) -> bool:
    """Whether ``form`` (one of :data:`FORMS`) runs in its fast form now."""
    if form not in FORMS:
        raise ValueError(f"unknown fast form {form!r}; known: {', '.join(FORMS)}")
    return enabled and form in KEPT


# --- the forms, each beside the plain operation it replaces ----------------------------------


def first_conv(
    conv: nn.Conv2d, spec: torch.Tensor, z: torch.Tensor, padding: int, *, fast: bool | None = None
) -> torch.Tensor:
    """``conv(concat(spec, z tiled over (freq, frames)))`` for a one-channel ``spec``.

    Fast (``tiled_z``): the spectrogram channel alone through the convolution (itself
    :func:`phase_conv2d` when ``phase_conv`` is on); the latent channels are constant over the
    plane, so their part is a plane of ones (zero padding included) convolved with the
    per-example kernel ``sum_c z_c W_c``, which is ``R @ kernel @ C.T`` where ``R`` and ``C``
    mark the taps that fall inside the plane for each output row and column.
    """
    if not (use("tiled_z") if fast is None else fast):
        tiled = z[:, :, None, None].expand(-1, -1, *spec.shape[-2:]).to(spec.dtype)
        return conv(torch.cat([spec, tiled], dim=1))
    w_spec, w_z = conv.weight[:, :1], conv.weight[:, 1:]
    stride = conv.stride[0]
    if use("phase_conv") and stride == 2:
        out = phase_conv2d(spec, w_spec, conv.bias, padding=padding)
    else:
        out = F.conv2d(spec, w_spec, conv.bias, stride=stride, padding=padding)
    kernels = torch.einsum("bc,ocij->boij", z.to(w_z.dtype), w_z).to(out.dtype)
    k = w_z.shape[-1]
    rows = inside_taps(spec.shape[-2], k, stride, padding).to(out)
    cols = inside_taps(spec.shape[-1], k, stride, padding).to(out)
    return out + rows @ kernels @ cols.T


def output_conv(
    deconv: nn.ConvTranspose2d, h: torch.Tensor, padding: int, *, fast: bool | None = None
) -> torch.Tensor:
    """``deconv(h)``, a stride-2 transposed convolution (``output_padding=1``); fast
    (``phase_deconv``, and only while autograd is off: its backward pass is the slower one):
    :func:`phase_conv_transpose2d`."""
    if fast is None:
        fast = use("phase_deconv") and not torch.is_grad_enabled()
    if fast:
        return phase_conv_transpose2d(h, deconv.weight, deconv.bias, padding=padding)
    return deconv(h)


def adain(
    h: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    eps: float,
    *,
    fast: bool | None = None,
) -> torch.Tensor:
    """``gamma * instance_norm(h) + beta`` with per-example ``(batch, channels)`` gamma and beta;
    fast (``adain``): one batch norm of ``(1, batch * channels, ...)`` whose affine is each
    example's (gamma, beta)."""
    if not (use("adain") if fast is None else fast):
        normed = F.instance_norm(h, eps=eps)
        return gamma[..., None, None] * normed + beta[..., None, None]
    b, c = h.shape[:2]
    flat = h.reshape(1, b * c, *h.shape[2:])
    out = F.batch_norm(
        flat, None, None, gamma.reshape(-1), beta.reshape(-1), training=True, eps=eps
    )
    return out.reshape(h.shape)


# --- the plain network -------------------------------------------------------------------------


def plain_forward(sep: UNetSeparator, spec: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """What ``sep(spec, z)`` returns (up to float rounding), with the same weights, computed with
    the textbook operations whatever the switch says: z tiled over the plane and concatenated to
    the input channels, every (transposed) convolution as its PyTorch module, AdaIN as instance
    norm followed by the z-dependent scale and bias."""
    from aqsep.model import AdaIN  # here: aqsep.model imports this module

    tiled = z[:, :, None, None].expand(-1, -1, *spec.shape[-2:]).to(spec.dtype)
    skips = [sep.encoder[0](torch.cat([spec, tiled], dim=1))]
    for block in sep.encoder[1:]:
        skips.append(block(skips[-1]))
    h = skips.pop()
    for i, (deconv, norm, drop) in enumerate(
        zip(sep.deconvs, sep.adains, sep.dropouts, strict=True)
    ):
        if i > 0:
            h = torch.cat([h, skips.pop()], dim=1)
        assert isinstance(norm, AdaIN)
        gamma, beta = norm.to_scale_bias(z).chunk(2, dim=-1)
        normed = F.instance_norm(deconv(h), eps=norm.eps)
        h = drop(F.relu(gamma[..., None, None] * normed + beta[..., None, None]))
    h = torch.cat([h, skips.pop()], dim=1)
    return torch.sigmoid(sep.to_mask(h))


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
