"""The U-Net as first written, the reference for aqsep's exact fast forms.

``aqsep.model.UNetSeparator`` computes the tiled-z part of its first convolution, the stride-2
first convolution, the one-channel output layer and AdaIN in exact faster forms. This module
computes the same network with the textbook operations: z tiled over the plane and concatenated
to the input channels, every (transposed) convolution called as its PyTorch module, AdaIN as an
instance norm followed by the z-dependent scale and bias. tests/test_model.py checks the fast
forms against it; benchmarks/separate.py measures them against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aqsep.model import UNetSeparator


def textbook_forward(sep: UNetSeparator, spec: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """What ``sep(spec, z)`` returns (up to float rounding), with the same weights."""
    tiled = z[:, :, None, None].expand(-1, -1, *spec.shape[-2:]).to(spec.dtype)
    skips = [sep.encoder[0](torch.cat([spec, tiled], dim=1))]
    for block in sep.encoder[1:]:
        skips.append(block(skips[-1]))
    h = skips.pop()
    for i, (deconv, adain, drop) in enumerate(
        zip(sep.deconvs, sep.adains, sep.dropouts, strict=True)
    ):
        if i > 0:
            h = torch.cat([h, skips.pop()], dim=1)
        gamma, beta = adain.to_scale_bias(z).chunk(2, dim=-1)
        normed = F.instance_norm(deconv(h), eps=adain.eps)
        h = drop(F.relu(gamma[..., None, None] * normed + beta[..., None, None]))
    h = torch.cat([h, skips.pop()], dim=1)
    return torch.sigmoid(sep.to_mask(h))
