"""Framewise BSSEval metrics of one target estimate, scored as target vs rest: museval (v4, the
field's protocol) or fast-bss-eval (validation only).
"""

from __future__ import annotations

import numpy as np
import torch

METRICS = ("SDR", "SIR", "SAR", "ISR")
# method -> track -> target -> metric -> framewise values
Scores = dict[str, dict[str, dict[str, dict[str, np.ndarray]]]]
WINDOW_SECONDS = 1.0  # SiSEC 2018: 1 s windows, 1 s hop
MUSEVAL_LABEL = "museval (BSSEval v4, 1 s windows)"
FAST_LABEL = "fast-bss-eval (torch, per-frame filters, 1 s windows) -- validation only, not museval"


def score(
    target: np.ndarray,
    rest: np.ndarray,
    est: np.ndarray,
    sample_rate: int,
    *,
    est_rest: np.ndarray | None = None,
    fast: bool = False,
) -> dict[str, np.ndarray]:
    """Framewise metrics of a target estimate, scored as target vs rest (module docstring).

    Args:
        target, rest: true target and true rest, ``(channels, samples)``.
        est: target estimate, same shape.
        est_rest: estimate of the rest (default: ``target + rest - est``).
    Returns:
        ``{"SDR", "SIR", "SAR", "ISR"}`` -> ``(frames,)`` arrays (NaN for silent frames).
    """
    if est.shape != target.shape:
        raise ValueError(f"estimate shape {est.shape} differs from reference shape {target.shape}")
    if est_rest is None:
        est_rest = target + rest - est
    refs = np.stack([target, rest]).astype(np.float64)
    ests = np.stack([est, est_rest]).astype(np.float64)
    win = round(WINDOW_SECONDS * sample_rate)
    if fast:
        return _score_fast(refs, ests, win)
    import museval
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    # museval solves small (<= 2048 x 2048) systems: multi-threaded BLAS is slower than one
    # thread for them (measured 4x on a 2-core machine).
    with threadpool_limits(limits=1, user_api="blas"):
        sdr, isr, sir, sar = museval.evaluate(
            refs.transpose(0, 2, 1),
            ests.transpose(0, 2, 1),
            win=win,
            hop=win,
            mode="v4",
            padding=False,
        )
    return {
        "SDR": _clean(sdr[0]),
        "SIR": _clean(sir[0]),
        "SAR": _clean(sar[0]),
        "ISR": _clean(isr[0]),
    }


def _clean(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).copy()
    x[~np.isfinite(x)] = np.nan
    return x


def _score_fast(refs: np.ndarray, ests: np.ndarray, win: int) -> dict[str, np.ndarray]:
    import fast_bss_eval

    n = refs.shape[-1]
    nwin = 1 if win >= n else (n - win) // win + 1  # museval's framing: full windows only
    frames_r, frames_e = [], []
    for i in range(nwin):
        sl = slice(i * win, min(i * win + win, n))
        frames_r.append(refs[:, :, sl].reshape(2, -1))  # channels concatenated in time
        frames_e.append(ests[:, :, sl].reshape(2, -1))
    r, e = torch.from_numpy(np.stack(frames_r)), torch.from_numpy(np.stack(frames_e))
    silent = (r.abs().sum(-1) == 0).any(-1) | (e.abs().sum(-1) == 0).any(-1)
    out = {m: np.full(nwin, np.nan) for m in METRICS}
    keep = (~silent).nonzero().flatten()
    if len(keep):
        sdr, sir, sar = fast_bss_eval.bss_eval_sources(r[keep], e[keep], compute_permutation=False)
        for name, v in (("SDR", sdr), ("SIR", sir), ("SAR", sar)):
            out[name][keep.numpy()] = _clean(v[:, 0].numpy())
    return out
