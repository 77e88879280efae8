"""A PyTorch model behind the separation core's numpy seam (:class:`aqsep.inference.Network`).

The core (:mod:`aqsep.inference`) and query encoding (:mod:`aqsep.query`) work on numpy arrays,
so that the ONNX path runs without PyTorch. :class:`TorchNetwork` is the PyTorch side of that
seam: each call moves its arrays to the model's device, runs the model in inference mode and
brings the result back as float32 arrays. :func:`aqsep.inference.as_network` wraps a module in
one wherever the core is handed a :class:`~aqsep.model.QuerySeparator`.
"""

from __future__ import annotations

import numpy as np
import torch

from aqsep.model import QuerySeparator


class TorchNetwork:
    """``model`` on ``device``, called with and returning numpy arrays."""

    def __init__(self, model: QuerySeparator, device: torch.device | str = "cpu") -> None:
        self.model = model
        self.device = torch.device(device)
        self.config = model.config

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)

    @torch.inference_mode()
    def mask(self, magnitude: np.ndarray, z: np.ndarray) -> np.ndarray:
        return _array(self.model.mask(self._tensor(magnitude), self._tensor(z)))

    @torch.inference_mode()
    def latent(self, magnitude: np.ndarray) -> np.ndarray:
        return _array(self.model.encode(self._tensor(magnitude)).mu)

    @torch.inference_mode()
    def stage_share(self, magnitude: np.ndarray) -> np.ndarray:
        return _array(self.model.stage_share(self._tensor(magnitude)))

    @torch.inference_mode()
    def side(self, z: np.ndarray) -> np.ndarray:
        return _array(self.model.side(self._tensor(z)))


def _array(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float32).numpy()
