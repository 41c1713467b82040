"""Run one reconstruction of one test sample and score it: what `reconstruct_*` rules call.

Each function returns the reconstruction and a tidy metrics row (one dict): dataset, sample,
mask, method, SSIM, PSNR, wall seconds, peak memory, and for iterative 4D-STEM methods the
iterations run and whether the run diverged. SSIM as docs/method.md, "Scores", says
(`physdiff.metrics`).
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import numpy as np
import torch

from physdiff.metrics.ssim import psnr_volume, ssim_phase_projection, ssim_volume
from physdiff.physics.mri import simulate_kspace
from physdiff.physics.multislice import MultisliceGeometry
from physdiff.recon.mri_baselines import MRI_BASELINES
from physdiff.recon.stem_baselines import sparse_decomposition, three_pie, torchslice

STEM_BASELINES = {"three_pie": three_pie, "torchslice": torchslice, "sparse_decomposition": sparse_decomposition}


def peak_memory_mb(device: str | torch.device | None = None) -> float:
    """Peak memory of this process in MB: CUDA allocations on a GPU, else peak resident set size."""
    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def reset_peak_memory(device: str | torch.device | None) -> None:
    """Start a new CUDA peak for `peak_memory_mb` on `device` (nothing on the CPU). torch's allocator
    keeps per-device statistics only once CUDA is initialised: resetting them in a process that has
    not used CUDA yet fails with "Invalid device argument", so initialise first."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats(device)


def mri_params(method: str, *, max_iter: int | None, tuned: dict | None, wavelet: str = "haar",
               levels: int | None = 1) -> dict[str, Any]:
    """Keyword arguments of an MRI baseline: its iteration count, its tuned weight, CS's wavelet and levels."""
    params: dict[str, Any] = {"wave_name": wavelet, "levels": levels} if method == "cs_l1_wavelet" else {}
    if max_iter is not None and method != "zero_filled":
        params["n_iter" if method == "projection" else "max_iter"] = int(max_iter)
    if tuned is not None:
        params[tuned["param"]] = float(tuned["value"])
    return params


def reconstruct_mri(
    volume: np.ndarray, mask: np.ndarray, *, method: str, params: dict[str, Any], noise_std: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, dict]:
    """Measure y = M ⊙ (F x + n), reconstruct with an MRI baseline, score against `volume`."""
    y = simulate_kspace(volume, mask, noise_std=noise_std, seed=seed)
    start = time.perf_counter()
    recon = MRI_BASELINES[method](y, mask, **params)
    wall = time.perf_counter() - start
    row = {
        "method": method,
        "ssim": ssim_volume(recon, volume),
        "psnr": psnr_volume(recon, volume),
        "wall_s": wall,
        "peak_mem_mb": peak_memory_mb(),
        "diverged": not bool(np.isfinite(recon).all()),
        "iterations": params.get("max_iter", params.get("n_iter", 0)),
        **{f"param_{k}": v for k, v in params.items()},
    }
    return recon.astype(np.float32), row


def reconstruct_stem(
    sample: dict, *, method: str, params: dict[str, Any], loss: str = "amplitude", device: str | None = None
) -> tuple[np.ndarray, dict]:
    """Reconstruct the potential of one 4D-STEM sample with a baseline; score its phase projection.

    A diverged run does not raise: the baseline returns its best iterate and the row says
    `diverged: True`, so the table can count such runs.
    """
    geometry = MultisliceGeometry.from_sample(sample)
    truth = np.asarray(sample["potential"], np.float32)
    fn = STEM_BASELINES[method]
    kwargs = dict(params)
    if method != "three_pie":
        kwargs["form"] = loss
    reset_peak_memory(device)
    start = time.perf_counter()
    potential, info = fn(sample["intensities"], geometry, device=device, **kwargs)
    wall = time.perf_counter() - start
    potential = potential.detach().cpu().numpy().astype(np.float32)
    sigma = float(sample["sigma"])
    row = {
        "method": method,
        "ssim": ssim_phase_projection(potential, truth, sigma),
        "ssim_start": ssim_phase_projection(np.zeros_like(truth), truth, sigma),
        "psnr": psnr_volume(sigma * potential.sum(0)[None], sigma * truth.sum(0)[None]),
        "wall_s": wall,
        "peak_mem_mb": peak_memory_mb(device),
        "diverged": bool(info["diverged"]),
        "iterations": int(info["iterations"]),
        "final_loss": float(info["final_loss"]),
        "stop_rule": info["stop_rule"],
        **{f"param_{k}": v for k, v in params.items()},
    }
    return potential, row


# The scalar each 4D-STEM baseline's tuning searches over (its iteration count is chosen with it),
# by keyword; 3PIE's wave step stays the configured one.
STEM_TUNED_PARAM = {"three_pie": "step_object", "torchslice": "lr", "sparse_decomposition": "sparsity"}


def _stem_kwargs(method: str, settings: dict[str, Any], value: float | None) -> dict[str, Any]:
    """Keyword arguments of a STEM baseline: its configured settings with the tuned scalar set."""
    return {**settings, STEM_TUNED_PARAM[method]: float(value)} if value is not None else dict(settings)


def tune_stem_baseline(samples: list[dict], *, method: str, grid: list[float], max_iter: int,
                       settings: dict[str, Any] | None = None, loss: str = "amplitude", max_extend: int = 2,
                       refine: int = 1, device: str | None = None) -> dict[str, Any]:
    """Choose a 4D-STEM baseline's scalar (`STEM_TUNED_PARAM`) and iteration count on validation samples.

    For each value `tune_scalar` tries, every sample is reconstructed once with `max_iter`
    iterations, the phase-projection SSIM of each iterate is recorded by the callback, and the
    iteration count with the best mean SSIM (`best_prefix`) gives that value's score: the count is
    the early-stopping rule of docs/method.md, "Conventions", chosen on validation data. Returns {"method",
    "param", "value", "n_iter", "ssim_mean", "on_edge", "max_iter", "n_iter_on_edge", "table":
    [{"value", "ssim_mean", "n_iter"}]}. When the best value's count is the cap itself, that value
    alone is run again with the cap doubled, at most `max_extend` times; n_iter_on_edge says the
    final count is still the final cap (`max_iter` in the result), so a longer run might score higher.
    """
    from physdiff.recon.tuning import best_prefix, tune_scalar

    settings = dict(settings or {})
    runs = [(MultisliceGeometry.from_sample(s), np.asarray(s["potential"], np.float32), float(s["sigma"]),
             s["intensities"]) for s in samples]
    n_iter_of: dict[float, int] = {}

    def score(value: float, cap: int = max_iter) -> float:
        histories = []
        for geometry, truth, sigma, intensities in runs:
            history: list[float] = []
            kwargs = _stem_kwargs(method, {**settings, "n_iter": cap}, value)
            if method != "three_pie":
                kwargs["form"] = loss
            def record(iteration, potential, loss_value, history=history, truth=truth, sigma=sigma):
                history.append(ssim_phase_projection(potential.detach().cpu().numpy(), truth, sigma))

            STEM_BASELINES[method](intensities, geometry, device=device, progress=False, callback=record, **kwargs)
            histories.append(history or [float("nan")])
        n_iter_of[value], mean = best_prefix(histories)
        return mean

    result = tune_scalar(score, grid, max_extend=max_extend, refine=refine, zero=method == "sparse_decomposition",
                         name=f"{method} {STEM_TUNED_PARAM[method]}")
    best, best_score, cap = result["best"], result["score"], max_iter
    table = {r["value"]: r["score"] for r in result["table"]}
    for _ in range(max_extend):
        if n_iter_of[best] < cap:
            break
        cap *= 2  # the chosen count is the cap: the optimum may lie beyond it
        best_score = table[best] = score(best, cap)
    return {"method": method, "param": STEM_TUNED_PARAM[method], "value": best, "n_iter": n_iter_of[best],
            "ssim_mean": best_score, "on_edge": result["on_edge"], "max_iter": cap,
            "n_iter_on_edge": n_iter_of[best] == cap,
            "table": [{"value": v, "ssim_mean": sc, "n_iter": n_iter_of[v]} for v, sc in sorted(table.items())]}


def stem_params(method: str, settings: dict[str, Any], tuned: dict | None) -> dict[str, Any]:
    """Keyword arguments of a STEM baseline: config settings, overridden by the tuned value and count."""
    if tuned is None:
        return _stem_kwargs(method, settings, None)
    return _stem_kwargs(method, {**settings, "n_iter": int(tuned["n_iter"])}, tuned["value"])
