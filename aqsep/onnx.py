"""ONNX export of a released model, and an onnxruntime network for the one separation core.

The networks consume and return spectrograms, so the STFT stays outside the graphs (in
:mod:`aqsep.inference` and :mod:`aqsep.query`, shared with the PyTorch backend). An export is a
folder of four files:

* ``query.onnx``, the Query-net (:meth:`~aqsep.model.QuerySeparator.encode`): linear magnitude
  ``magnitude (batch, n_fft // 2 + 1, frames)`` -> ``mu``, ``logvar`` ``(batch, latent_dim)``;
  batch and frames dynamic.
* ``separator.onnx``, the Separator (:meth:`~aqsep.model.QuerySeparator.mask`): ``magnitude
  (batch, n_fft // 2 + 1, frames)`` and ``z (batch, latent_dim)`` -> ``mask`` of the magnitude's
  shape; batch dynamic, frames dynamic in multiples of 64 (the U-Net halves them six times).
  :class:`OnnxNetwork` zero-pads other lengths and crops the mask, as the model itself does
  (``log1p(0) = 0``: padding the magnitude or its features is the same).
* ``config.json`` and ``classes.json``, copied unchanged from the model.

:class:`OnnxNetwork` provides what the core asks of a network (:class:`aqsep.inference.Network`),
so ``Separator(..., backend="onnx")`` and ``aqsep separate --backend onnx`` separate through the
same chunking, STFT and mask mapping as the PyTorch backend.

**Exporter.** torch.onnx's TorchScript-based exporter (``dynamo=False``), checked with torch
2.13.0: it exports both graphs in about a second and needs only the ``onnx`` package. The
``torch.export``-based exporter (the default since torch 2.9, which needs ``onnxscript`` too)
exports the Separator, fast forms included, but takes about 15 s on 2 cores, and fails on the
Query-net's GRU when frames are dynamic. The model is exported with the exact fast layers of
:func:`aqsep.fastforms.accelerate` (the first convolution without the tiled latent,
:class:`~aqsep.fastforms.PhaseConvTranspose2d`); with :func:`~aqsep.fastforms.phase_conv2d` too
they ran 2.3x faster in onnxruntime than the plain convolutions (one thread, the shipped model, a
batch of 4 excerpts). AdaIN is exported in its plain form (:class:`~aqsep.fastforms.BatchNormAdaIN`
runs it under the tracer): its one-pass batch normalisation of ``(1, batch * channels, ...)``
cannot be exported with a dynamic batch by this exporter.

**Parity.** :func:`export_onnx` runs both graphs on shapes other than the traced ones and compares
them with the model (:data:`VERIFY_TOLERANCE`); ``tests/test_onnx.py`` states the tolerances of
masks, latents and separated audio.

**Without PyTorch.** The runtime half of this module (:class:`OnnxNetwork`,
:func:`load_onnx_model`) imports numpy and onnxruntime only, and the core it serves works on numpy
arrays, so ``Separator(..., backend="onnx")`` and ``aqsep separate --backend onnx`` never import
PyTorch (``tests/test_onnx.py`` checks ``sys.modules``); an install without torch separates with
an export (README, "Without PyTorch"). The export half imports torch when it is called.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aqsep.config import UNET_DEPTH, ModelConfig
from aqsep.errors import ModelError, OutputError, SettingError
from aqsep.precision import EXPORT_INFO
from aqsep.release import (
    CLASSES,
    CONFIG,
    ReleasedModel,
    open_model_folder,
    read_classes,
    write_folder,
)

if TYPE_CHECKING:
    from aqsep.model import QuerySeparator

QUERY_GRAPH = "query.onnx"
SEPARATOR_GRAPH = "separator.onnx"
GRAPHS = (QUERY_GRAPH, SEPARATOR_GRAPH)
# a cascade's vocal stage (Spleeter 2-stems' vocal mask r) and its gate g(z)
STAGE_GRAPH = "stage.onnx"
GATE_GRAPH = "gate.onnx"
STAGE_GRAPHS = (STAGE_GRAPH, GATE_GRAPH)
ALL_GRAPHS = (*GRAPHS, *STAGE_GRAPHS)
EXPORT_FILES = (*ALL_GRAPHS, CONFIG, CLASSES, EXPORT_INFO)  # all export_onnx writes or replaces
OPSET = 17  # InstanceNormalization, GRU and every other operator used are older than this
FRAME_STEP = 2**UNET_DEPTH  # the Separator graph's frames are a multiple of this
# The largest difference export_onnx accepts between a graph and the model (masks in [0, 1],
# latents of order 1). Measured: about 6e-5 (masks) and 1e-6 (latents) on the shipped model.
VERIFY_TOLERANCE = 1e-3
INSTALL_HINT = "pip install 'aqsep[onnx]'"


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise SettingError(
            f"the ONNX backend needs onnxruntime, an optional extra: {INSTALL_HINT}"
        ) from None
    return onnxruntime


# ---- export ------------------------------------------------------------------------------------


def exportable(model: QuerySeparator) -> QuerySeparator:
    """A float32 CPU copy of ``model`` in eval mode with the exact fast layers (the caller's
    model is left as it is)."""
    from aqsep.fastforms import accelerate

    return accelerate(copy.deepcopy(model).cpu().float().eval())


def export_graphs(model: QuerySeparator, folder: Path) -> None:
    """Write ``query.onnx`` and ``separator.onnx`` of ``model`` into ``folder``, and for a cascade
    (``config.vocal_stage``) ``stage.onnx`` and ``gate.onnx``.

    A cascade's separator graph is its query model on one patch (the core cuts the stage's
    chunks into patches: :func:`aqsep.inference.patched`).
    """
    try:
        import onnx  # noqa: F401  (the TorchScript-based exporter writes through it)
    except ImportError:
        raise SettingError(
            f"exporting to ONNX needs the onnx package, an optional extra: {INSTALL_HINT}"
        ) from None
    import torch
    from torch import nn

    class QueryGraph(nn.Module):
        def __init__(self, model: QuerySeparator) -> None:
            super().__init__()
            self.model = model

        def forward(self, magnitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            posterior = self.model.encode(magnitude)
            return posterior.mu, posterior.logvar

    class SeparatorGraph(nn.Module):
        def __init__(self, model: QuerySeparator) -> None:
            super().__init__()
            self.model = model

        def forward(self, magnitude: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return self.model.mask(magnitude, z)

    class StageGraph(nn.Module):
        def __init__(self, model: QuerySeparator) -> None:
            super().__init__()
            self.model = model

        def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
            return self.model.stage_share(magnitude)

    class GateGraph(nn.Module):
        def __init__(self, model: QuerySeparator) -> None:
            super().__init__()
            self.model = model

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.model.side(z)

    net = exportable(model)
    stage = net.config.vocal_stage
    bins = net.config.audio.n_fft // 2 + 1
    generator = torch.Generator().manual_seed(0)
    # batch 2 and 2 * FRAME_STEP frames: no size of 1 for the tracer to take for a constant
    magnitude = torch.rand(2, bins, 2 * FRAME_STEP, generator=generator)
    z = torch.randn(2, net.config.query.latent_dim, generator=generator)
    with warnings.catch_warnings(), torch.no_grad(), _export_errors(model):
        # The exporter's own deprecation notice, and tracer notes on the shape tests of
        # QuerySeparator.mask (padding frames, the Nyquist bin): the graph takes frames in
        # multiples of FRAME_STEP and a fixed number of bins, which OnnxNetwork respects.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            QueryGraph(net).eval(),
            (magnitude,),
            str(folder / QUERY_GRAPH),
            dynamo=False,
            input_names=["magnitude"],
            output_names=["mu", "logvar"],
            dynamic_axes={"magnitude": {0: "batch", 2: "frames"}, "mu": {0: "batch"}},
            opset_version=OPSET,
        )
        if stage is not None:
            stage_bins = stage.audio.n_fft // 2 + 1
            spec = torch.rand(
                2, stage.audio_channels, stage_bins, 2 * FRAME_STEP, generator=generator
            )
            torch.onnx.export(
                StageGraph(net).eval(),
                (spec,),
                str(folder / STAGE_GRAPH),
                dynamo=False,
                input_names=["magnitude"],
                output_names=["share"],
                dynamic_axes={
                    "magnitude": {0: "batch", 3: "frames"},
                    "share": {0: "batch", 3: "frames"},
                },
                opset_version=OPSET,
            )
            torch.onnx.export(
                GateGraph(net).eval(),
                (z,),
                str(folder / GATE_GRAPH),
                dynamo=False,
                input_names=["z"],
                output_names=["g"],
                dynamic_axes={"z": {0: "batch"}, "g": {0: "batch"}},
                opset_version=OPSET,
            )
        torch.onnx.export(
            SeparatorGraph(net).eval(),
            (magnitude, z),
            str(folder / SEPARATOR_GRAPH),
            dynamo=False,
            input_names=["magnitude", "z"],
            output_names=["mask"],
            dynamic_axes={
                "magnitude": {0: "batch", 2: "frames"},
                "z": {0: "batch"},
                "mask": {0: "batch", 2: "frames"},
            },
            opset_version=OPSET,
        )


@contextlib.contextmanager
def _export_errors(model: QuerySeparator) -> Iterator[None]:
    """An exporter failure as a :class:`ModelError` (the exporter raises many kinds)."""
    try:
        yield
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"the model cannot be exported to ONNX: {reason}") from err


def graph_difference(model: QuerySeparator, network: OnnxNetwork, *, seed: int = 1) -> float:
    """The largest absolute difference between ``network``'s outputs (mask, mu, logvar) and
    ``model``'s, on random magnitudes of shapes other than the traced ones (3 examples; 3 * 64 - 5
    frames: padded by the network)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    bins = model.config.audio.n_fft // 2 + 1
    magnitude = 3 * torch.rand(3, bins, 3 * FRAME_STEP - 5, generator=generator)
    z = torch.randn(3, model.config.query.latent_dim, generator=generator)
    with torch.inference_mode():
        want_mask, want = model.mask(magnitude, z), model.encode(magnitude)
    got_mask = network.mask(magnitude.numpy(), z.numpy())
    got_mu, got_logvar = network.posterior(magnitude.numpy())
    gaps = [
        np.abs(got_mask - want_mask.numpy()).max(),
        np.abs(got_mu - want.mu.numpy()).max(),
        np.abs(got_logvar - want.logvar.numpy()).max(),
    ]
    stage = model.config.vocal_stage
    if stage is not None:
        bins = stage.audio.n_fft // 2 + 1
        spec = 3 * torch.rand(
            2, stage.audio_channels, bins, 2 * FRAME_STEP - 3, generator=generator
        )
        with torch.inference_mode():
            want_share, want_g = model.stage_share(spec), model.side(z)
        gaps.append(np.abs(network.stage_share(spec.numpy()) - want_share.numpy()).max())
        gaps.append(np.abs(network.side(z.numpy()) - want_g.numpy()).max())
    return float(max(gaps))


def check_export_destination(out_dir: str | Path, source: Path | None = None) -> Path:
    """Where :func:`export_onnx` may write: a new or empty folder, an earlier export (its files are
    replaced), or the model's own folder ``source`` (the graphs are added beside its weights)."""
    out_dir = Path(out_dir)
    blocker = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise OutputError(f"cannot export to {out_dir}: {blocker} is a file, not a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return out_dir
    if source is not None and out_dir.resolve() == source.resolve():
        return out_dir
    others = sorted(p.name for p in out_dir.iterdir() if p.name not in EXPORT_FILES)
    if others:
        listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise OutputError(
            f"{out_dir} is not empty and holds no ONNX export ({listed}); export to a new or "
            "empty folder, over an earlier export, or into the model's own folder"
        )
    return out_dir


def export_onnx(
    model: str | Path | None,
    out_dir: str | Path,
    *,
    verify: bool = True,
    precision: str = "fp32",
    max_loss_db: float | None = None,
) -> Path:
    """Export a released model (a folder or a bundled name; None: the bundled default) to
    ``out_dir``: ``query.onnx``, ``separator.onnx`` (and a cascade's ``stage.onnx`` and
    ``gate.onnx``), ``config.json``, ``classes.json`` and ``export.json``.

    The files are written to a temporary folder beside ``out_dir`` and moved into place only once
    all of them are written (and, with ``verify``, the graphs reproduce the model within
    :data:`VERIFY_TOLERANCE`); nothing is left behind on an error. ``precision`` ``fp16`` or
    ``int8`` converts the heavy graphs and keeps them only if they lose at most ``max_loss_db``
    (default :data:`aqsep.precision.MAX_LOSS_DB`) of SDR on the check sets
    (:func:`aqsep.precision.check_sets`).

    Raises:
        ModelError: the model cannot be loaded, its graphs do not reproduce it, or the precision
            loses more than ``max_loss_db``.
        OutputError: ``out_dir`` cannot be written, or holds other files.
        SettingError: onnx or onnxruntime is not installed.
    """
    from aqsep import precision as reduced
    from aqsep.release import load_model

    if precision not in reduced.PRECISIONS:
        choices = ", ".join(reduced.PRECISIONS)
        raise SettingError(f"unknown precision {precision!r}; choose one of {choices}")
    limit = reduced.MAX_LOSS_DB if max_loss_db is None else max_loss_db
    released = load_model(model)
    source = released.path
    assert source is not None  # load_model always says where the model came from
    if released.model.config.pretrained:
        raise ModelError(
            f"{source} is a Spleeter U-Net conditioned on the query (the spleeter preset), which "
            "the ONNX export does not cover: export a model of the cpu, paper or cascade preset"
        )
    out_dir = check_export_destination(out_dir, source)
    if verify:
        _onnxruntime()  # before the export, not after it

    config = released.model.config

    def fill(tmp: Path) -> None:
        export_graphs(released.model, tmp)
        for name in (CONFIG, CLASSES):
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
        if verify:
            network = OnnxNetwork(tmp, released.model.config, threads=1)
            worst = graph_difference(released.model, network)
            if not worst <= VERIFY_TOLERANCE:
                raise ModelError(
                    f"the ONNX graphs of {source} differ from the model by up to {worst:.3g} "
                    f"(more than {VERIFY_TOLERANCE:g}): the export is not usable"
                )
        check = None
        if precision != "fp32":
            reference = OnnxNetwork(tmp, config)  # the float32 graphs, held by their sessions
            reduced.convert(tmp, config, precision)
            classes = {n: released.class_latent(n) for n in released.classes}
            check = reduced.measured_loss(reference, OnnxNetwork(tmp, config), classes)
            if not check["loss_db"] <= limit:
                raise ModelError(
                    f"{precision} graphs of {source} lose {check['loss_db']:.2f} dB of SDR "
                    f"(more than {limit:g} dB; measured on {', '.join(check['sets'])}): not "
                    "written; export in fp32 (the default)"
                )
        reduced.write_info(tmp, precision, check)

    in_place = out_dir.is_dir() and out_dir.resolve() == source.resolve()  # config is there
    replaced = ALL_GRAPHS if in_place else EXPORT_FILES
    return write_folder(out_dir, fill, replaced, what="the export")


# ---- runtime -----------------------------------------------------------------------------------


class OnnxNetwork:
    """The exported Query-net and Separator run by onnxruntime on the CPU: the network calls of
    the separation core (:class:`aqsep.inference.Network`) and of query encoding.

    Args:
        folder: an export (:func:`export_onnx`).
        config: the model's configuration (its ``config.json``).
        threads: threads of each graph's operators (default: :func:`default_threads`, the
            number the PyTorch backend uses); idle ones sleep unless ``OMP_WAIT_POLICY`` is
            ``ACTIVE``, as torch's do.

    Raises:
        ModelError: a graph is missing, not ONNX, or does not fit ``config``.
        SettingError: onnxruntime is not installed.
    """

    def __init__(self, folder: Path, config: ModelConfig, *, threads: int | None = None) -> None:
        ort = _onnxruntime()
        self.config = config
        self.folder = folder
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        # The waiting policy of torch's threads (aqsep sets OMP_WAIT_POLICY=PASSIVE unless it is
        # set): spinning threads slow separation down whenever anything else runs on the machine.
        spin = os.environ.get("OMP_WAIT_POLICY", "").upper() == "ACTIVE"
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.log_severity_level = 3  # errors only: no notes on stderr
        # no memory arena: about 45 MB less peak memory separating 96 s in memory, and no slower
        options.enable_cpu_mem_arena = False
        # no memory pattern (buffers planned ahead for each input shape) and basic graph
        # optimisations only (no weights copied into the CPU's blocked layout): the default
        # model's export peaks at 363 MB instead of 495 on a 3-min song and runs 0.94x the wall
        # time; the fast model's is unchanged (docs/benchmarks.md, *Graph options*)
        options.enable_mem_pattern = False
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        self.query = self._session(ort, options, QUERY_GRAPH)
        self.separator = self._session(ort, options, SEPARATOR_GRAPH)
        if config.vocal_stage is not None:
            self.stage = self._session(ort, options, STAGE_GRAPH)
            self.gate = self._session(ort, options, GATE_GRAPH)
        self._check_inputs()

    def _session(self, ort: Any, options: Any, name: str) -> Any:
        path = self.folder / name
        if not path.is_file():
            raise ModelError(
                f"{self.folder} has no {name}: export the model first (aqsep export-onnx MODEL "
                "OUT_DIR)"
            )
        try:
            return ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime's own exception types, one per failure
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelError(f"{path} is not a usable ONNX graph: {reason}") from None

    def _check_inputs(self) -> None:
        """Each graph's inputs have the sizes that ``config`` gives."""
        bins, dim = self.config.audio.n_fft // 2 + 1, self.config.query.latent_dim
        want = {
            QUERY_GRAPH: {"magnitude": bins},
            SEPARATOR_GRAPH: {"magnitude": bins, "z": dim},
        }
        for name, session in ((QUERY_GRAPH, self.query), (SEPARATOR_GRAPH, self.separator)):
            inputs = {i.name: i.shape for i in session.get_inputs()}
            for input_name, size in want[name].items():
                shape = inputs.get(input_name)
                if shape is None or len(shape) < 2 or shape[1] != size:
                    raise ModelError(
                        f"{self.folder / name} does not fit {self.folder / CONFIG}: input "
                        f"{input_name!r} should have {size} rows, the graph has shape {shape}"
                    )

    @property
    def latent_dim(self) -> int:
        return self.config.query.latent_dim

    def mask(self, magnitude: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Separator mask ``(batch, bins, frames)`` for a magnitude of that shape and latents
        ``(batch, latent_dim)`` (:meth:`~aqsep.model.QuerySeparator.mask`)."""
        z = np.ascontiguousarray(z, dtype=np.float32)
        (mask,) = self.separator.run(None, {"magnitude": _frames_padded(magnitude), "z": z})
        return np.ascontiguousarray(mask[..., : magnitude.shape[-1]])

    def stage_share(self, magnitude: np.ndarray) -> np.ndarray:
        """A cascade's vocal-stage mask ``r`` ``(batch, channels, bins, frames)`` of a magnitude
        of that shape (:meth:`~aqsep.model.QuerySeparator.stage_share`)."""
        (share,) = self.stage.run(None, {"magnitude": _frames_padded(magnitude)})
        return np.ascontiguousarray(share[..., : magnitude.shape[-1]])

    def side(self, z: np.ndarray) -> np.ndarray:
        """A cascade's gate ``g(z)`` ``(batch,)`` (:meth:`~aqsep.model.QuerySeparator.side`)."""
        (g,) = self.gate.run(None, {"z": np.ascontiguousarray(z, dtype=np.float32)})
        return g

    def posterior(self, magnitude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The Query-net's ``mu`` and ``logvar`` ``(batch, latent_dim)`` of a magnitude ``(batch,
        bins, frames)`` (:meth:`~aqsep.model.QuerySeparator.encode`)."""
        x = np.ascontiguousarray(magnitude, dtype=np.float32)
        mu, logvar = self.query.run(None, {"magnitude": x})
        return mu, logvar

    def latent(self, magnitude: np.ndarray) -> np.ndarray:
        """The Query-net's ``mu`` (:meth:`posterior`)."""
        return self.posterior(magnitude)[0]


def _frames_padded(magnitude: np.ndarray) -> np.ndarray:
    """``magnitude (..., frames)`` as float32, zero-padded to a multiple of :data:`FRAME_STEP`
    frames (the graphs' U-Nets halve them six times; ``log1p(0) = 0``, so padding the magnitude
    is padding the features)."""
    x = np.ascontiguousarray(magnitude, dtype=np.float32)
    pad = (-x.shape[-1]) % FRAME_STEP
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)]) if pad else x


def default_threads() -> int:
    """Operator threads when none are asked for: ``OMP_NUM_THREADS`` where it is set, else the
    physical cores this process may use, as PyTorch counts them (onnxruntime's own default)."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return 0  # onnxruntime picks: one thread per physical core


def load_onnx_model(
    name_or_path: str | Path | None = None, *, threads: int | None = None
) -> ReleasedModel[OnnxNetwork]:
    """Load an ONNX export (:func:`export_onnx`) for the onnxruntime backend.

    Raises:
        ModelError: the folder is missing, has no graphs, or they do not fit its config.
        SettingError: onnxruntime is not installed.
    """
    folder, config, metadata = open_model_folder(name_or_path, QUERY_GRAPH)
    network = OnnxNetwork(folder, config, threads=threads)
    classes = read_classes(folder, config.query.latent_dim)
    return ReleasedModel(model=network, classes=classes, metadata=metadata, path=folder)
