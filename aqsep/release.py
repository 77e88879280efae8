"""Released models: a folder with ``model.safetensors``, ``config.json`` and ``classes.json``.

``config.json`` holds everything needed to rebuild the network and its audio front-end (the
:class:`~aqsep.config.ModelConfig` dict) and a format version; ``classes.json`` holds the mean
latent of every class the model knows (``"separation without a query"``). Loading is strict
(every weight present, no extra ones, shapes equal) and never unpickles anything.

The folder's JSON files are read without PyTorch (:func:`read_config`, :func:`read_classes`,
:func:`open_model_folder`: the ONNX runtime of :mod:`aqsep.onnx` loads an export through them);
PyTorch is imported by :func:`load_model` and :func:`save_model` only. Both kinds of folder are
written by :func:`write_folder`, the one atomic folder writer.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from aqsep.config import ModelConfig
from aqsep.errors import ModelError, OutputError, QueryError

if TYPE_CHECKING:
    import torch

    from aqsep.model import QuerySeparator

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CLASSES = "classes.json"
MODEL_FILES = (WEIGHTS, CONFIG, CLASSES)  # everything save_model writes, and all it may replace
# what a folder missing a loader's file is told (open_model_folder)
_NEEDS = {
    WEIGHTS: f"a released model needs {WEIGHTS} and {CONFIG}",
    "query.onnx": "export the model first (aqsep export-onnx MODEL OUT_DIR)",
}
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar")
BUNDLED_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL = "default"


@dataclass
class ClassLatent:
    """Mean of mu over the non-silent training excerpts of one class."""

    latent: list[float]
    level: str = "coarse"  # "coarse" (vocals/drums/bass/other) or "fine" (hi-hat, piano, ...)
    count: int = 0


N = TypeVar("N")


@dataclass
class ReleasedModel(Generic[N]):
    """A loaded model: its network (a :class:`~aqsep.model.QuerySeparator`, or a runtime of its
    exported graphs such as :class:`aqsep.onnx.OnnxNetwork`) and the class latents."""

    model: N
    classes: dict[str, ClassLatent] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def class_latent(self, name: str) -> np.ndarray:
        """The stored mean latent of class ``name`` (any case), float32 ``(latent_dim,)``."""
        key = name.lower()
        if key not in self.classes:
            known = ", ".join(sorted(self.classes)) or "none"
            raise QueryError(f"unknown class {name!r}; this model knows: {known}")
        return np.asarray(self.classes[key].latent, dtype=np.float32)


def check_model_destination(out_dir: str | Path) -> Path:
    """Where :func:`save_model` may write: a new or empty folder, or a released model's folder.

    Call it before long work (training) so that a bad destination fails at once. A folder that
    holds other files (a user's notes, a run folder...) is refused rather than emptied; in a
    released model's folder only the model's own files are replaced.
    """
    out_dir = Path(out_dir)
    blocker = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise OutputError(f"cannot write the model to {out_dir}: {blocker} is a file, not a folder")
    if not out_dir.is_dir():
        return out_dir
    others = sorted(p.name for p in out_dir.iterdir() if p.name not in MODEL_FILES)
    if not others:
        return out_dir
    if not (out_dir / CONFIG).is_file() or not (out_dir / WEIGHTS).is_file():
        listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise OutputError(
            f"{out_dir} is not empty and holds no aqsep model ({listed}); a model is saved to a "
            "new or empty folder, or over an aqsep model, so choose another folder"
        )
    return out_dir


def save_model(
    out_dir: str | Path,
    model: QuerySeparator,
    classes: dict[str, ClassLatent],
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a released model folder atomically: nothing is ever deleted but an older model.

    The files are written to a temporary folder beside ``out_dir``; a new or empty ``out_dir`` is
    then replaced by it in one rename. In an existing model's folder, each of the model's own
    files is replaced by a rename of its own and every other file is left as it is. A folder that
    holds other files and no model is refused (:func:`check_model_destination`).
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    out_dir = check_model_destination(out_dir)

    def fill(tmp: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        # Spleeter's 20 M parameters: float16 in the file, float32 once loaded (a pretrained
        # separator's every weight; a vocal stage's own, the rest as trained)
        state = {k: v.half() if _stored_half(model, k, v) else v for k, v in state.items()}
        try:
            save_file(state, str(tmp / WEIGHTS), metadata={"format_version": str(FORMAT_VERSION)})
        except SafetensorError as err:  # safetensors words a full disk in its own error
            reason = str(err).rpartition("I/O error: ")[2]
            raise OutputError(f"writing the model to {out_dir} failed: {reason or err}") from None
        config = {
            "format_version": FORMAT_VERSION,
            "model": model.config.to_dict(),
            "metadata": metadata or {},
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=2))
        payload = {
            name: {
                "latent": [round(float(x), 6) for x in c.latent],
                "level": c.level,
                "count": c.count,
            }
            for name, c in sorted(classes.items())
        }
        (tmp / CLASSES).write_text(json.dumps(payload, indent=1))

    return write_folder(out_dir, fill, MODEL_FILES, what="the model")


def write_folder(
    out_dir: Path, fill: Callable[[Path], None], replace: Sequence[str], *, what: str
) -> Path:
    """Write a folder's files atomically: nothing is left half-written, nothing else is deleted.

    ``fill`` writes the files into a temporary folder beside ``out_dir``. A new or empty
    ``out_dir`` is then replaced by that folder in one rename; in a folder that holds files, each
    name of ``replace`` is replaced by a rename of its own (or removed, where ``fill`` did not
    write it) and every other file is left as it is. On an error the temporary folder is removed.

    Raises:
        OutputError: the folder cannot be written (``what`` names what was being written).
    """
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as err:
        raise OutputError(f"cannot write {what} to {out_dir}: {err.strerror or err}") from None
    try:
        fill(tmp)
        tmp.chmod(0o755)  # mkdtemp makes the folder private; what is written is for everyone
        for child in tmp.iterdir():
            child.chmod(0o644)
        if out_dir.is_dir() and any(out_dir.iterdir()):
            for name in replace:  # each file in one rename; other files stay
                if (tmp / name).exists():
                    os.replace(tmp / name, out_dir / name)
                else:
                    (out_dir / name).unlink(missing_ok=True)
        else:
            os.replace(tmp, out_dir)  # a new folder, or over an empty one
    except OSError as err:
        raise OutputError(f"writing {what} to {out_dir} failed: {err.strerror or err}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_model_path(name_or_path: str | Path | None) -> Path:
    """A model folder from a path, or a bundled model name (``None`` means the default)."""
    if name_or_path is None:
        bundled = BUNDLED_DIR / DEFAULT_MODEL
        if not bundled.is_dir():
            raise ModelError(
                f"the bundled default model is not installed (expected in {bundled}); "
                "give the path of a released model folder instead"
            )
        return bundled
    path = Path(name_or_path)
    if path.is_file():
        if path.name == WEIGHTS or path.name == CONFIG:
            return path.parent
        kind = (
            "a training checkpoint or pickled weights, which aqsep never loads; export the "
            "training run as a released model"
            if path.suffix.lower() in CHECKPOINT_SUFFIXES
            else "a file"
        )
        raise ModelError(
            f"{path} is {kind}: a model is a released model folder ({WEIGHTS}, {CONFIG}, {CLASSES})"
        )
    if path.is_dir() or path.suffix == ".safetensors" or os.sep in str(name_or_path):
        return path.parent if path.suffix == ".safetensors" else path
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        raise ModelError(
            f"{path}: no such file; a model is a released model folder ({WEIGHTS}, {CONFIG}, "
            f"{CLASSES}), not a checkpoint file"
        )
    bundled = BUNDLED_DIR / str(name_or_path)
    if bundled.is_dir():
        return bundled
    known = (
        sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / CONFIG).exists())
        if BUNDLED_DIR.is_dir()
        else []
    )
    raise ModelError(
        f"no model folder or bundled model named {str(name_or_path)!r}; bundled: {', '.join(known) or 'none'}"
    )


def _check_not_pickle(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(9)
    # safetensors: a little-endian u64 header length, then the JSON header. Its first byte can be
    # 0x80 (a header of 384 bytes...), so look at the structure before the pickle magic.
    header_len = int.from_bytes(head[:8], "little")
    if len(head) == 9 and head[8:] == b"{" and 0 < header_len <= path.stat().st_size - 8:
        return
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise ModelError(
            f"{path} is a pickle/torch checkpoint, not safetensors; aqsep never unpickles model "
            "files: export the training run as a released model, or convert it to safetensors"
        )
    raise ModelError(
        f"{path} is not a safetensors file; a released model stores its weights as safetensors"
    )


def _stored_half(model: QuerySeparator, key: str, value: torch.Tensor) -> bool:
    if not value.is_floating_point():
        return False
    return model.config.pretrained or key.startswith("vocal_stage.")


def read_config(folder: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The model configuration and metadata in ``folder/config.json`` (a released model's, or
    its export's). Raises :class:`ModelError` with a specific message."""
    config_path = folder / CONFIG
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{config_path} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or "model" not in config:
        raise ModelError(f"{config_path} has no 'model' section")
    if not isinstance(config["model"], dict):
        raise ModelError(
            f"{config_path}: the 'model' section must be an object (audio, query, separator), "
            f"got {json.dumps(config['model'])}"
        )
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(
            f"{config_path}: format_version {version!r} is not supported (expected {FORMAT_VERSION})"
        )
    try:
        return ModelConfig.from_dict(config["model"]), config.get("metadata", {})
    except (ValueError, TypeError) as err:
        raise ModelError(f"{config_path}: inconsistent model config: {err}") from None


def read_classes(folder: Path, latent_dim: int) -> dict[str, ClassLatent]:
    """The class latents in ``folder/classes.json`` (none if there is no such file)."""
    classes_path = folder / CLASSES
    classes: dict[str, ClassLatent] = {}
    if classes_path.is_file():
        try:
            raw = json.loads(classes_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ModelError(f"{classes_path} is malformed (not JSON text): {err}") from None
        if not isinstance(raw, dict):
            raise ModelError(
                f"{classes_path} is malformed: it holds {type(raw).__name__}, not an object of "
                '{class name: {"latent": [numbers], "level": ..., "count": ...}}'
            )
        for name, entry in raw.items():
            latent = entry.get("latent") if isinstance(entry, dict) else None
            if not isinstance(latent, list) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                for x in latent
            ):
                raise ModelError(
                    f"{classes_path}: class {name!r} is malformed: its latent must be a list of "
                    "finite numbers"
                )
        try:
            classes = {k.lower(): ClassLatent(**v) for k, v in raw.items()}
        except TypeError as err:
            raise ModelError(f"{classes_path} is malformed: {err}") from None
        for name, c in classes.items():
            if len(c.latent) != latent_dim:
                raise ModelError(
                    f"{classes_path}: class {name!r} has a {len(c.latent)}-dim latent, model uses {latent_dim}"
                )
    return classes


def load_model(
    name_or_path: str | Path | None = None, device: str | torch.device = "cpu"
) -> ReleasedModel[QuerySeparator]:
    """Load a released model strictly. Raises :class:`ModelError` with a specific message."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from aqsep.fastforms import accelerate
    from aqsep.model import QuerySeparator

    folder, model_config, metadata = open_model_folder(name_or_path, WEIGHTS)
    weights, config_path = folder / WEIGHTS, folder / CONFIG
    try:
        model = QuerySeparator(model_config)
    except (ValueError, TypeError, AssertionError) as err:
        raise ModelError(f"{config_path}: inconsistent model config: {err}") from None
    _check_not_pickle(weights)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"{weights} is not a valid safetensors file: {err}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ModelError(
            f"{weights} does not match {config_path}: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''}"
        )
    for key, tensor in state.items():
        if tensor.dtype not in (torch.float32, torch.float16, torch.int64):
            raise ModelError(f"{weights}: weight {key} is {tensor.dtype}, not float32 or float16")
        if tensor.shape != expected[key].shape:
            raise ModelError(
                f"{weights}: weight {key} has shape {tuple(tensor.shape)}, config expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state, strict=True)
    accelerate(model).eval().to(device)  # exact fast layers, the same parameters
    classes = read_classes(folder, model.latent_dim)
    return ReleasedModel(model=model, classes=classes, metadata=metadata, path=folder)


def open_model_folder(
    name_or_path: str | Path | None, needs: str
) -> tuple[Path, ModelConfig, dict[str, Any]]:
    """The folder of a model (a path or a bundled name), its configuration and metadata: the
    skeleton both loaders share (:func:`load_model`, :func:`aqsep.onnx.load_onnx_model`).

    ``needs`` is the file the loader reads beside ``config.json`` (the weights, or a graph).

    Raises:
        ModelError: no such folder, a file missing, or a config that cannot be read.
    """
    folder = resolve_model_path(name_or_path)
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist")
    for name in (needs, CONFIG):
        if not (folder / name).is_file():
            raise ModelError(
                f"model folder {folder} has no {name}; {_NEEDS.get(needs, f'it needs {needs}')}"
            )
    config, metadata = read_config(folder)
    return folder, config, metadata
