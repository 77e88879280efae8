"""The training objective: the three loss terms of a batch and their weighted sum.

Loss (docs/paper.md section 5): ``L = lambda_R * L_R + lambda_KL * L_KL + lambda_lat * L_latent`` with

- ``L_R``: L1 between the target magnitude and ``S(M, z)``, ``z ~ Q(S_T)`` reparameterised;
- ``L_KL``: ``KL(Q(S_T) || N(0, I))``;
- ``L_latent``: L1 between ``z ~ N(0, I)`` and the mean of ``Q(S(M, z))``. With
  ``TrainConfig.latent_updates_query=False`` (BicycleGAN's choice, the default) this term
  re-encodes the estimate through the Query-net with *detached* parameters, so that its gradient
  reaches the separator (through the estimate) but not the Query-net. The term is computed on the
  first ``TrainConfig.latent_fraction`` of each batch's mixtures (all of them by default).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from aqsep.config import TrainConfig
from aqsep.losses import kl_loss, latent_loss, reconstruction_loss
from aqsep.model import Posterior, QuerySeparator
from aqsep.query import encode_frozen


def latent_batch(batch: int, fraction: float) -> int:
    """Mixtures of a batch of ``batch`` that take the L_latent path: ``fraction`` of them, at least
    one."""
    if not 0 < fraction <= 1:
        raise ValueError(f"latent_fraction must be in (0, 1], got {fraction}")
    return max(1, round(fraction * batch))


def weighted_loss(
    config: TrainConfig, rec: torch.Tensor, kl: torch.Tensor, latent: torch.Tensor
) -> torch.Tensor:
    """``lambda_R * L_R + lambda_KL * L_KL + lambda_lat * L_latent`` of a training or validation
    batch; without L_KL while the Query-net is frozen (only its parameters feel that term)."""
    lambda_kl = 0.0 if config.freeze_query else config.lambda_kl
    return config.lambda_rec * rec + lambda_kl * kl + config.lambda_latent * latent


def training_losses(
    model: QuerySeparator,
    mixture: torch.Tensor,
    target: torch.Tensor,
    config: TrainConfig,
    *,
    query: torch.Tensor | None = None,
    requery: Callable[[torch.Tensor], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The three loss terms and their weighted sum.

    Args:
        mixture, target: linear magnitudes on the separator's front-end, ``(batch, bins, frames)``
            (``(batch, channels, bins, frames)`` for a multichannel separator).
        query: the target's magnitude on the Query-net's front-end (default: ``target``, where
            the two front-ends are one).
        requery: an estimate's magnitude -> its magnitude on the Query-net's front-end, for
            L_latent's re-encoding (default: the identity).
    Returns:
        ``{"loss", "rec", "kl", "latent"}`` scalars (``latent`` is 0 when ``lambda_latent`` is 0).
    """
    requery = requery or (lambda m: m)
    posterior = model.encode(target if query is None else query)
    z = posterior.sample(generator)
    if config.lambda_latent > 0:
        batch = mixture.shape[0]
        n_prior = latent_batch(batch, config.latent_fraction)
        shape = (n_prior, z.shape[-1])
        z_prior = torch.randn(shape, generator=generator, device=z.device, dtype=z.dtype)
        # both separator passes in one batch: S(M, z ~ Q(S_T)) and S(M', z ~ N(0, I)) on the
        # first n_prior mixtures M'
        estimates = model(torch.cat([mixture, mixture[:n_prior]]), torch.cat([z, z_prior]))
        estimate, estimate_prior = estimates.split([batch, n_prior])
        encode = model.encode if config.latent_updates_query else lambda m: encode_frozen(model, m)
        latent = latent_loss(z_prior.float(), encode(requery(estimate_prior)).mu.float())
    else:
        estimate = model(mixture, z)
        latent = torch.zeros((), device=mixture.device)
    rec = reconstruction_loss(estimate.float(), target.float())
    kl = kl_loss(Posterior(posterior.mu.float(), posterior.logvar.float()))
    return {"loss": weighted_loss(config, rec, kl, latent), "rec": rec, "kl": kl, "latent": latent}
