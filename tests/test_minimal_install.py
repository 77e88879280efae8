"""An install without PyTorch separates with an ONNX export (README, "Without PyTorch").

A new virtual environment gets aqsep without its dependencies and then only what the ONNX path
imports (:data:`RUNTIME`); an export made here by the full install is separated there by the
command line, and the estimate equals this process's torch separation of the same file.
"""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from aqsep.api import Separator
from aqsep.onnx import export_onnx

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parent.parent
# what `python -c "import sys; sys.modules['torch'] = None; ..."` shows the ONNX path to import
RUNTIME = ["numpy", "soundfile", "soxr", "tqdm", "av", "onnxruntime"]


@pytest.mark.slow
def test_an_install_without_torch_separates_with_an_export(
    tiny_model_dir: Path, audio_file, tmp_path: Path
) -> None:
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", str(ROOT)], check=True, timeout=600)
    subprocess.run([*pip, *RUNTIME], check=True, timeout=600)
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout.lower()
    assert "torch" not in listed and "aqsep" in listed

    export = export_onnx(tiny_model_dir, tmp_path / "export")
    song = audio_file("song.wav", seconds=1.0, sr=44100, channels=2)
    out = tmp_path / "out"
    done = subprocess.run(
        [str(python), "-m", "aqsep", "separate", str(song), "--model", str(export)]
        + ["--backend", "onnx", "--target", "drums", "-o", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # not the repository: the installed package runs
    )
    assert done.returncode == 0, done.stderr
    got, rate = sf.read(out / "song" / "drums.wav", dtype="float32", always_2d=True)
    sep = Separator(tiny_model_dir, device="cpu")
    want = sep.separate(sf.read(song, dtype="float32")[0].T, rate, sep.class_latent("drums"))
    assert np.abs(got.T - want["target"]).max() <= 2 / 32768  # 16-bit files: a step or two
