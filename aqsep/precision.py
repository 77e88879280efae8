"""Reduced-precision ONNX exports, each accepted or refused by the loss it is measured to cost.

:func:`aqsep.onnx.export_onnx` writes float32 graphs (``fp32``). With ``precision`` it converts
the heavy graphs (:func:`converted_graphs`; the Query-net and the gate stay float32) and then
measures what the conversion costs before anything is written:

* ``fp16``: a cascade's vocal stage (Spleeter's U-Nets, 78 of its 89 MB) in half precision
  (``onnxconverter-common``), its input and output float32. Half the file; onnxruntime's x86 CPU
  kernels compute most float16 operators through casts, so it is slower there
  (docs/benchmarks.md, "Precision").
* ``int8``: static quantization (onnxruntime's QDQ format, per-channel int8 weights, uint8
  activations) of the convolutions of the separator and a cascade's stage, calibrated on the
  bundled example's spectrograms.

**The loss check** (:func:`measured_loss`): the bundled example (``aqsep/examples``, synthetic)
and the real MUSDB18 preview clip of ``stempeg`` (:func:`check_sets`) are separated for each class
they have a true stem of with the float32 graphs and with the converted ones, through the one
separation core; the loss is the largest drop of SDR against a true stem. A conversion that loses more than ``max_loss_db`` (:data:`MAX_LOSS_DB`, 0.1 dB) is
refused with its figure, and nothing is written. The accepted figure goes to the export's
``export.json``. The same measurement on real recordings is ``benchmarks/onnx_precision.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aqsep.audio import read_audio, resample
from aqsep.config import ModelConfig
from aqsep.errors import ModelError, SettingError
from aqsep.inference import separate_array, separator_input
from aqsep.transforms import stft_array

PRECISIONS = ("fp32", "fp16", "int8")
MAX_LOSS_DB = 0.1
EXAMPLE_DIR = Path(__file__).parent / "examples"
EXPORT_INFO = "export.json"  # the precision of an export and its measured loss


def converted_graphs(config: ModelConfig, precision: str) -> tuple[str, ...]:
    """The graphs ``precision`` applies to: for int8 the separator and a cascade's stage; for
    fp16 a cascade's stage only (the converter fails on the shape arithmetic of the separator's
    exact fast layers, which therefore stay float32)."""
    from aqsep.onnx import SEPARATOR_GRAPH, STAGE_GRAPH

    stage = (STAGE_GRAPH,) if config.vocal_stage is not None else ()
    return stage if precision == "fp16" else (SEPARATOR_GRAPH, *stage)


def convert(folder: Path, config: ModelConfig, precision: str) -> None:
    """Rewrite the heavy graphs (:func:`converted_graphs`) of the export in ``folder`` in
    ``precision`` (int8: calibrated with the class latents of its ``classes.json``).

    Raises:
        SettingError: an unknown precision, or the converter is not installed.
    """
    if precision not in PRECISIONS:
        raise SettingError(
            f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
        )
    if precision == "fp32":
        return
    graphs = converted_graphs(config, precision)
    if not graphs:
        raise SettingError(
            f"{precision} covers a cascade's vocal stage, which this model has none of; "
            "export it in fp32 or int8"
        )
    for name in graphs:
        path = folder / name
        if precision == "fp16":
            _to_float16(path)
        else:
            _to_int8(path, _calibration(folder, config, name))


def _to_float16(path: Path) -> None:
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError:
        raise SettingError(
            "an fp16 export needs onnxconverter-common, part of the onnx extra: "
            "pip install 'aqsep[onnx]'"
        ) from None
    model = float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(model, str(path))


def _to_int8(path: Path, samples: list[dict[str, np.ndarray]]) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items: Iterator[dict[str, np.ndarray]] = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantized = path.with_name(path.stem + ".int8.onnx")
    quantize_static(
        str(path),
        str(quantized),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv", "ConvTranspose"],
        per_channel=True,
    )
    quantized.replace(path)


def _example_mixture() -> tuple[np.ndarray, int]:
    path = EXAMPLE_DIR / "mixture.wav"
    if not path.is_file():
        raise ModelError(f"the bundled example {path} is missing: a precision cannot be checked")
    return read_audio(path)


def _calibration(folder: Path, config: ModelConfig, graph: str) -> list[dict[str, np.ndarray]]:
    """Inputs of ``graph`` from the bundled example: its spectrograms on the graph's front-end,
    in pieces of the length the core feeds it, with the class latents for the separator."""
    from aqsep.onnx import FRAME_STEP, STAGE_GRAPH
    from aqsep.release import read_classes

    audio, rate = _example_mixture()
    stage = config.vocal_stage
    if graph == STAGE_GRAPH:
        assert stage is not None
        front, channels, frames = stage.audio, stage.audio_channels, stage.audio.segment_frames
    else:
        front, channels = config.separator_audio, config.separator_channels
        frames = config.audio.segment_frames
    wave = resample(separator_input(audio[None], channels), rate, front.sample_rate)
    magnitude = np.abs(stft_array(wave, front.n_fft, front.hop_length))  # (1, [ch,] f, t)
    if channels == 1:
        magnitude = magnitude[:, 0] if magnitude.ndim == 4 else magnitude
    frames = max(FRAME_STEP, frames // FRAME_STEP * FRAME_STEP)
    total = magnitude.shape[-1]
    pieces = [
        magnitude[..., s : s + frames] for s in range(0, max(1, total - frames + 1), frames // 2)
    ]
    pieces = [np.pad(p, [(0, 0)] * (p.ndim - 1) + [(0, frames - p.shape[-1])]) for p in pieces]
    if graph == STAGE_GRAPH:
        return [{"magnitude": p.astype(np.float32)} for p in pieces]
    classes = read_classes(folder, config.query.latent_dim)
    latents = [np.asarray(c.latent, np.float32)[None] for c in classes.values()] or [
        np.zeros((1, config.query.latent_dim), np.float32)
    ]
    return [
        {"magnitude": p.astype(np.float32), "z": latents[i % len(latents)]}
        for i, p in enumerate(pieces)
    ]


def check_sets() -> list[tuple[str, np.ndarray, int, dict[str, np.ndarray]]]:
    """What a precision is checked on: ``(name, mixture, rate, {class: true stem})``. The bundled
    example (synthetic), and the real MUSDB18 preview clip that ships with ``stempeg`` (a
    dependency of the full install; left out where it cannot be read)."""
    audio, rate = _example_mixture()
    stems = {}
    for path in sorted(EXAMPLE_DIR.glob("true_*.wav")):
        truth, truth_rate = read_audio(path)
        if truth_rate == rate and truth.shape == audio.shape:
            stems[path.stem.removeprefix("true_")] = truth
    sets = [("the bundled example", audio, rate, stems)]
    try:
        import stempeg

        from aqsep.data.musdb import STEM_IDS

        streams, clip_rate = stempeg.read_stems(stempeg.example_stem_path(), dtype=np.float32)
        clip = {c: np.ascontiguousarray(streams[i].T) for c, i in STEM_IDS.items()}
        mixture = np.sum(list(clip.values()), axis=0)
        sets.append(("stempeg's MUSDB18 preview clip", mixture, int(clip_rate), clip))
    except Exception:  # no stempeg, no ffmpeg, or a clip it cannot decode: the example alone
        pass
    return sets


def measured_loss(reference: Any, converted: Any, classes: dict[str, np.ndarray]) -> dict[str, Any]:
    """SDR (dB) of the true stems of :func:`check_sets` separated by ``reference`` and by
    ``converted`` (:class:`aqsep.inference.Network` s) with each class latent of ``classes`` that
    has a true stem there, and the largest drop, ``loss_db`` (negative: the converted graphs do
    better everywhere)."""
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for name, mixture, rate, stems in check_sets():
        for cls, truth in stems.items():
            if cls not in classes:
                continue
            a = separate_array(reference, mixture, rate, classes[cls])
            b = separate_array(converted, mixture, rate, classes[cls])
            figures.setdefault(name, {})[cls] = {
                "fp32_db": _sdr(truth, a),
                "converted_db": _sdr(truth, b),
            }
    if not figures:
        raise ModelError("the model knows none of the check sets' classes (vocals, drums, ...)")
    loss = max(v["fp32_db"] - v["converted_db"] for f in figures.values() for v in f.values())
    return {"loss_db": loss, "sets": figures}


def _sdr(truth: np.ndarray, estimate: np.ndarray) -> float:
    error = np.sum((truth - estimate) ** 2)
    return float(10 * np.log10(np.sum(truth**2) / max(error, 1e-20)))


def write_info(folder: Path, precision: str, check: dict[str, Any] | None) -> None:
    """``export.json``: the precision and, for a converted one, its measured loss."""
    info = {"precision": precision, "max_loss_db": MAX_LOSS_DB, "check": check}
    (folder / EXPORT_INFO).write_text(json.dumps(info, indent=1) + "\n")


def read_precision(folder: Path) -> str:
    """The precision of an export (``fp32`` for one written before ``export.json`` existed)."""
    try:
        return str(json.loads((folder / EXPORT_INFO).read_text()).get("precision", "fp32"))
    except (OSError, ValueError, AttributeError):
        return "fp32"
