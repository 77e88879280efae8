"""Scoring separations with the field's protocol, and the tables that summarise them.

Protocol (SiSEC 2018, docs/paper.md section 8): BSSEval v4 through ``museval`` with 1 s windows
and a 1 s hop at the data's own sample rate and channel count; the median over a track's frames,
then the median over tracks, per target. Frames where a reference or an estimate is digitally
silent are NaN (museval's rule) and left out of the medians.

**Target vs rest.** BSSEval needs the estimates of all sources of a mixture at once to tell
interference (SIR) from artifacts (SAR). A query model separates one target at a time, so each
target is scored as a two-source problem: references ``(true target, true rest)``, estimates
``(target estimate, mixture - target estimate)``. The target's row is what is reported. Its
SDR does not depend on how the rest is split into stems; its SIR counts everything that is not the
target as interference. Numbers are therefore comparable with each other and with SiSEC-style
tables for SDR, while SIR/SAR of a four-source evaluation may differ.

**Tracks** come from the data layer (:mod:`aqsep.data`: stems folders, MUSDB18, MIR-1K, and its
one split rule), read whole at their own rate and channels (:meth:`aqsep.data.track.Track.load`).
**The mixture is the sum of the stems** for every data set (the MUSDB18 preview clip in
``stempeg`` ships a mixture 17 % away from that sum; scoring against stems that do not add up to
the input would blame the model for the mastering; MIR-1K's is accompaniment + voice, mono).
Tracks that a model was trained on can be found from its metadata (:func:`trained_on`) and are
refused by the command line unless allowed.

Methods (one folder of per-track JSON files each, in museval's format):

- ``gt``: each chunk's query is the true target of the same chunk (the paper's upper bound), one
  latent per chunk; a chunk where the target is silent takes the whole target's latent;
- ``mean``: the class mean latent stored with the model ("separation without a query");
- ``iterative``: the class mean, then the estimate re-encoded ``refine`` times (paper section 7.4);
- ``mixture`` (reference): the mixture itself as the estimate of every source;
- ``irm`` (reference): the oracle ideal ratio mask ``|T| / (|T| + |R|)`` (magnitude ratio, SiSEC's
  "IRM1") computed from the true stems on the STFT grid the model's separation uses at the data's
  rate (:func:`aqsep.inference.native_grid`) and applied to the mixture with its phase.

``fast=True`` scores with ``fast_bss_eval`` (torch backend; BSSEval v3-style filters fitted per
1 s frame, channels concatenated in time, no ISR) instead of museval: quick, for validation, and
labelled as such in every output.

One concern a module: :mod:`~aqsep.evaluate.tracks` (the split, held-out checks, default
targets), :mod:`~aqsep.evaluate.methods` (latents and estimates of each method),
:mod:`~aqsep.evaluate.scoring` (museval and fast-bss-eval), :mod:`~aqsep.evaluate.cache`
(per-track files and their headers), :mod:`~aqsep.evaluate.loop` (:func:`evaluate_tracks`) and
:mod:`~aqsep.evaluate.tables` (summaries).
"""

from __future__ import annotations

from aqsep.evaluate.cache import model_fingerprint, read_track_json, track_json
from aqsep.evaluate.loop import evaluate_tracks
from aqsep.evaluate.methods import (
    METHODS,
    MODES,
    REFERENCE_METHODS,
    Progress,
    check_targets,
    estimate,
    gt_latents,
    method_label,
    method_name,
    model_latent,
    oracle_irm,
)
from aqsep.evaluate.scoring import (
    FAST_LABEL,
    METRICS,
    MUSEVAL_LABEL,
    WINDOW_SECONDS,
    Scores,
    score,
)
from aqsep.evaluate.tables import (
    SummaryRow,
    summarize,
    summary_markdown,
    track_medians,
    write_summary,
)
from aqsep.evaluate.tracks import (
    check_held_out,
    coarse_targets,
    default_targets,
    list_tracks,
    trained_on,
)

__all__ = [
    "FAST_LABEL",
    "METHODS",
    "METRICS",
    "MODES",
    "MUSEVAL_LABEL",
    "REFERENCE_METHODS",
    "WINDOW_SECONDS",
    "Progress",
    "Scores",
    "SummaryRow",
    "check_held_out",
    "check_targets",
    "coarse_targets",
    "default_targets",
    "estimate",
    "evaluate_tracks",
    "gt_latents",
    "list_tracks",
    "method_label",
    "method_name",
    "model_fingerprint",
    "model_latent",
    "oracle_irm",
    "read_track_json",
    "score",
    "summarize",
    "summary_markdown",
    "track_json",
    "track_medians",
    "trained_on",
    "write_summary",
]
