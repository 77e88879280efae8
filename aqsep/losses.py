"""The three training losses of the cVAE with latent regressor (docs/paper.md section 5)."""

from __future__ import annotations

import torch

from aqsep.model import Posterior


def reconstruction_loss(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_R: L1 between estimated and true target magnitudes (mean over all bins)."""
    return (estimate - target).abs().mean()


def kl_loss(posterior: Posterior) -> torch.Tensor:
    """L_KL: KL(q(z|S_T) || N(0, I)), summed over latent dimensions, mean over the batch."""
    mu, logvar = posterior
    return (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).sum(dim=-1).mean()


def latent_loss(z: torch.Tensor, reencoded_mu: torch.Tensor) -> torch.Tensor:
    """L_latent: L1 between the prior sample z and the mean of Q(S(M, z))."""
    return (z - reencoded_mu).abs().mean()
