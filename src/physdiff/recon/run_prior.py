"""Run DART and DRIFT on one measurement and score it; choose their settings on validation data.

What the `reconstruct_dart`, `reconstruct_drift`, `tune_dart` and `tune_drift` rules call. Each
reconstruction returns the volume and metrics rows in the baselines' format
(`physdiff.recon.run`), so one table gathers them all.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from physdiff.config import mri_problem_config, stem_problem_config
from physdiff.data.plan import recon_order, stem_plan
from physdiff.data.stem_sim import load_sample
from physdiff.data.transforms import PowerTransform, load_transform
from physdiff.errors import ConfigError, InputError
from physdiff.metrics.ssim import psnr_volume, ssim_phase_projection, ssim_volume
from physdiff.models.diffusion import GaussianDiffusion
from physdiff.models.train import load_model
from physdiff.physics.mri import simulate_kspace
from physdiff.physics.multislice import MultisliceGeometry
from physdiff.recon.dart import dart
from physdiff.recon.drift import check_candidates, drift, lowest_loss, physics_only, ranked, score_candidates
from physdiff.recon.problems import MRIProblem, STEMProblem
from physdiff.recon.run import mri_params, peak_memory_mb, reset_peak_memory, stem_params
from physdiff.recon.tuning import tune_scalar
from physdiff.results import MODALITIES, Layout

log = logging.getLogger(__name__)


def load_partition_models(paths: Sequence[str], *, slices: int | None = None,
                          size: Sequence[int] | None = None, contrast: str | None = None) -> list[torch.nn.Module]:
    """Load the G partition models (EMA weights, CPU), each checked by `load_model`.

    With `slices` (S of the volumes to reconstruct) G must fit into S; with `size` (H, W) every
    model must have been built for H x W slices. A mismatch is an InputError naming the file.
    `contrast` picks the class of contrast-conditional models (mri.train_contrasts, or "any");
    None: their first, FLAIR.
    """
    if not paths:
        raise InputError("no partition models given")
    if slices is not None and not 1 <= len(paths) <= slices:
        raise InputError(f"{len(paths)} partition models cannot split {slices} slices")
    models = []
    for path in paths:
        model, meta = load_model(path, contrast=contrast)
        built = meta["config"]["model"].get("image_size")
        if size is not None and built is not None and (int(built), int(built)) != tuple(size):
            raise InputError(f"{path}: the model was built for {built} x {built} slices, the volumes have "
                             f"{size[0]} x {size[1]}; retrain it for this size (mri.size or stem.simulation.gpts)")
        models.append(model)
    return models


def mri_problem(volume: np.ndarray, mask: np.ndarray, *, noise_std: float, seed: int, lam: float = 1.0,
                solver: str = "projection", solver_params: dict | None = None) -> MRIProblem:
    """Measure a volume exactly as the baselines do (same noise seed) and wrap it as a problem."""
    y = simulate_kspace(np.asarray(volume, np.float32), mask, noise_std=noise_std, seed=seed)
    return MRIProblem(y, mask, lam=lam, solver=solver, solver_params=solver_params)


def stem_problem(sample: dict, transform: PowerTransform, **kwargs) -> STEMProblem:
    return STEMProblem.from_sample(sample, transform, **kwargs)


def score(modality: str, volume: np.ndarray, truth: np.ndarray, sigma: float | None = None) -> dict:
    """SSIM and PSNR as the tables report them (docs/method.md, "Scores")."""
    if modality == "mri":
        return {"ssim": ssim_volume(volume, truth), "psnr": psnr_volume(volume, truth)}
    return {"ssim": ssim_phase_projection(volume, truth, sigma),
            "psnr": psnr_volume(sigma * volume.sum(0)[None], sigma * truth.sum(0)[None])}


def _row(modality: str, method: str, volume: np.ndarray, truth: np.ndarray, sigma, seconds: float,
         device, **extra) -> dict:
    return {"method": method, **score(modality, volume, truth, sigma), "wall_s": seconds,
            "peak_mem_mb": peak_memory_mb(device), "diverged": not bool(np.isfinite(volume).all()), **extra}


def dart_options(settings: dict, seed: int) -> dict:
    """`physdiff.recon.dart.dart`'s keyword arguments from tuned (or configured) DART settings;
    files written before seam, start and mean_snr existed get what those runs used."""
    return dict(sampler=settings["sampler"], steps=settings["steps"], eta=settings["eta"],
                correction=settings["correction"], n_samples=settings.get("n_samples", 1), seed=seed,
                seam=settings.get("seam", "none"), start=settings.get("start", 1.0),
                mean_snr=settings.get("mean_snr", 0.0))


def run_dart(models, problem, truth: np.ndarray, *, modality: str, settings: dict, seed: int = 0,
             sigma: float | None = None, progress: bool = True, adapt: dict | None = None,
             heldout: float | None = None, kept_out: dict | None = None) -> tuple[np.ndarray, dict, list[dict]]:
    """DART on one problem; returns (volume, metrics row, per-step log). With `adapt` (the
    `recon.dart.adapt` settings) the prior is adapted to the scan (`physdiff.recon.adapt`) and the
    row's method is "dart_adapt", with the chosen stop.

    `heldout` F (with `adapt`, its own holdout fraction) also reconstructs from the measurement
    less a seeded fraction F of it (MRI: of the lines outside the centre band; 4D-STEM: of the
    scan positions; the split of `seed`, the same for plain and adapted DART) and adds its error
    on the held-out part to the row
    ("heldout_nmse", no ground truth needed). `kept_out`, a dict, receives that reconstruction
    ("volume") and the held-out mask ("held")."""
    device = "cuda" if torch.cuda.is_available() else None
    reset_peak_memory(device)
    options = dart_options(settings, seed)
    result = dart(models, problem, adapt=adapt, progress=progress, **options)
    extra = {} if adapt is None else {"adapt_stop": result.adapt["stop"],
                                      **{f"adapt_{k}": v for k, v in adapt.items()}}
    kept = None
    if adapt is not None:
        kept = result.adapt["kept_volume"], result.adapt["held"]
    elif heldout is not None:
        sub, held = problem.split_measurement(heldout, seed=seed)
        kept = dart(models, sub, progress=False, **options).volume, held
    if kept is not None:
        extra["heldout_nmse"] = problem.heldout_error(kept[0], kept[1])
        if kept_out is not None:
            kept_out.update(volume=kept[0], held=kept[1])
    row = _row(modality, "dart" if adapt is None else "dart_adapt", result.volume, truth, sigma, result.seconds,
               device, iterations=len(GaussianDiffusion().schedule(settings["steps"], start=settings.get("start", 1.0))),
               partitions=len(models), **{f"param_{k}": v for k, v in settings.items()}, **extra)
    return result.volume, row, result.steps


def run_drift(candidates: np.ndarray, problem, truth: np.ndarray, *, modality: str, n_iter: int,
              refine_top: int = 1, sigma: float | None = None,
              progress: bool = True) -> tuple[dict, list[dict], list[dict]]:
    """DRIFT and its physics-only twin on one problem.

    Returns ({method: volume}, rows, candidates): one row per candidate with its score, its rank
    by score, its data loss after refining (refined ones only) and whether it was chosen.
    """
    device = "cuda" if torch.cuda.is_available() else None
    refined = drift(candidates, problem, n_iter=n_iter, refine_top=refine_top, progress=progress)
    twin = physics_only(problem, n_iter=n_iter)
    common = {"iterations": n_iter, "param_n_candidates": len(candidates)}
    rows = [_row(modality, "drift", refined.volume, truth, sigma, refined.seconds, device, **common,
                 param_refine_top=refine_top, best_candidate=refined.best, best_score=refined.scores[refined.best]),
            _row(modality, "drift_physics_only", twin.volume, truth, sigma, twin.seconds, device, **common)]
    rank = {i: r for r, i in enumerate(ranked(refined.scores))}
    loss = dict(zip(refined.refined, refined.losses))
    table = [{"candidate": i, "score": s, "rank": rank[i], "loss": loss.get(i, ""), "chosen": i == refined.best}
             for i, s in enumerate(refined.scores)]
    return {"drift": refined.volume, "drift_physics_only": twin.volume}, rows, table


def grid_settings(base: dict, grid: dict[str, Sequence]) -> list[dict]:
    """Every combination of the grid's values over the base settings (grid order)."""
    for key in grid:
        if key not in base:
            raise ConfigError(f"recon.dart.grid: '{key}' is not a DART setting; expected one of {sorted(base)}")
    keys = list(grid)
    return [{**base, **dict(zip(keys, values))} for values in itertools.product(*(grid[k] for k in keys))]


def tune_dart(evaluate: Callable[[dict], float], base: dict, grid: dict[str, Sequence]) -> dict:
    """Pick the DART settings with the best mean validation SSIM; `evaluate(settings)` returns it.

    Returns {"settings", "score", "table": [{settings, score, seconds}]}; ties go to the first.
    """
    table = []
    for settings in grid_settings(base, grid):
        start = time.perf_counter()
        table.append({"settings": settings, "score": float(evaluate(settings)),
                      "seconds": time.perf_counter() - start})
        log.info("DART %s: validation SSIM %.4f (%.0f s)", settings, table[-1]["score"], table[-1]["seconds"])
    best = max(table, key=lambda r: r["score"])
    return {"settings": best["settings"], "score": best["score"], "table": table}


def tune_drift(candidates: np.ndarray, problems: Sequence[tuple[Any, np.ndarray, float | None]], *,
               modality: str, grid: Sequence[int], refine_top: int = 1, max_extend: int = 3,
               upper: int = 1000) -> dict:
    """Choose DRIFT's K (the solver iterations, shared with its twin) and M (how many of the
    best-scored candidates are refined; `drift(refine_top=M)`) by mean validation SSIM.

    `problems` are [(problem, truth, sigma)]. Each problem scores the candidates once, and each
    (problem, candidate, K) is solved once: refining the `refine_top` best gives DRIFT's pick for
    every M up to it. K is searched past the edges of `grid` (`tune_scalar`, scoring each K by
    its best M). Where the best M at the chosen K is the largest tried and fewer than N, M doubles
    there, up to `max_extend` times. `refine_top` = 1 keeps the paper's pick by score.

    Returns {"n_iter", "refine_top", "score", "on_edge" (K), "refine_on_edge" (M),
    "table": [{"n_iter", "refine_top", "score"}]}.
    """
    if refine_top < 1:
        raise ConfigError(f"recon.drift.refine_top must be >= 1, got {refine_top}")
    scored = [score_candidates(check_candidates(candidates, problem), problem) for problem, _, _ in problems]
    orders = [ranked(scores) for _, scores in scored]
    n = len(candidates)
    solved: dict[tuple[int, int, int], tuple[float, float]] = {}  # (problem, candidate, K) -> (loss, SSIM)
    table: dict[tuple[int, int], float] = {}  # (K, M) -> mean validation SSIM

    def refine(j: int, i: int, k: int) -> tuple[float, float]:
        if (j, i, k) not in solved:
            problem, truth, sigma = problems[j]
            volume = np.asarray(problem.solve(scored[j][0][i], k), np.float32)
            solved[j, i, k] = float(problem.loss(volume)), score(modality, volume, truth, sigma)["ssim"]
        return solved[j, i, k]

    def evaluate(k: int, m_max: int) -> None:
        m_max = min(m_max, n)
        per_problem = [[refine(j, i, k) for i in order[:m_max]] for j, order in enumerate(orders)]
        for m in range(1, m_max + 1):
            if (k, m) not in table:
                table[k, m] = float(np.mean([runs[lowest_loss([loss for loss, _ in runs], m)][1]
                                             for runs in per_problem]))
        log.info("DRIFT K = %d: validation SSIM %s", k,
                 ", ".join(f"{table[k, m]:.4f} (M = {m})" for m in range(1, m_max + 1)))

    def best_m(k: int) -> int:
        tried = sorted(m for kk, m in table if kk == k)
        return max(tried, key=lambda m: table[k, m])  # ties: the fewest refined

    def score_k(value: float) -> float:
        k = max(1, int(round(value)))
        evaluate(k, refine_top)
        return table[k, best_m(k)]

    result = tune_scalar(score_k, grid, lower=0.5, upper=upper, name="recon.drift.n_iter")
    k = max(1, int(round(result["best"])))
    m_max = min(refine_top, n)
    for _ in range(max_extend):
        if refine_top == 1 or best_m(k) < m_max or m_max == n:
            break
        m_max = min(2 * m_max, n)
        evaluate(k, m_max)
    m = best_m(k)
    refine_on_edge = refine_top > 1 and m == m_max < n
    if refine_on_edge:
        log.warning("tuning 'recon.drift.refine_top': the best M = %d is the most tried (of N = %d)", m, n)
    return {"n_iter": k, "refine_top": m, "score": table[k, m], "on_edge": result["on_edge"],
            "refine_on_edge": bool(refine_on_edge),
            "table": [{"n_iter": kk, "refine_top": mm, "score": v} for (kk, mm), v in sorted(table.items())]}


def load_drift_tuning(path: str | Path) -> tuple[int, int]:
    """DRIFT's tuned (K, M) from a tune_drift file. Files written before M was tuned hold only K;
    their DRIFT refined the best-scored candidate alone, so M = 1."""
    tuning = json.loads(Path(path).read_text())
    if "n_iter" not in tuning:
        raise InputError(f"{path}: no 'n_iter'; expected a tune_drift file with DRIFT's K")
    return int(tuning["n_iter"]), int(tuning.get("refine_top", 1))


def _mri_solver_params(tuning_path: str | None, solver: str, wavelet: str, levels: int | None) -> dict:
    """The DRIFT MRI solver's weight: the one the baseline of that name was tuned to for the mask."""
    tuned = json.loads(Path(tuning_path).read_text()) if tuning_path else None
    return mri_params(solver, max_iter=None, tuned=tuned, wavelet=wavelet, levels=levels)


def build_problem(modality: str, cfg: dict, *, volume=None, mask=None, seed: int = 0, sample: dict | None = None,
                  transform=None, solver_tuning: str | None = None, device=None, kspace=None,
                  geometry: MultisliceGeometry | None = None):
    """The problem of one MRI volume (measured with `seed`) or one 4D-STEM sample, from the rule's params.

    `cfg` holds: noise_std, lam, solver, wavelet, levels (MRI); k, sparsity, loss, solver, solver_params (4D-STEM).
    Measured data, with no ground truth: MRI `kspace` (S, H, W) sampled with `mask` instead of a
    volume; 4D-STEM `sample` = {"intensities": ...} with its `geometry`
    (`physdiff.data.stem_measured`) instead of a simulated sample's keys.
    The 4D-STEM forward model lives on `device` (default: CUDA where there is one, else the CPU).
    """
    if modality == "mri":
        params = _mri_solver_params(solver_tuning, cfg["solver"], cfg["wavelet"], cfg["levels"])
        if kspace is not None:
            return MRIProblem(kspace, mask, lam=cfg["lam"], solver=cfg["solver"], solver_params=params)
        return mri_problem(volume, mask, noise_std=cfg["noise_std"], seed=seed, lam=cfg["lam"], solver=cfg["solver"],
                           solver_params=params)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    # the solver's weight as the baseline of that name was tuned; its iteration count is DRIFT's K
    tuned = json.loads(Path(solver_tuning).read_text()) if solver_tuning else None
    params = stem_params(cfg["solver"], cfg["solver_params"], tuned)
    options = dict(k=cfg["k"], sparsity=cfg["sparsity"], form=cfg["loss"], solver=cfg["solver"],
                   solver_params=params, device=device, align_candidates=cfg.get("align", False))
    if geometry is not None:
        return STEMProblem(sample["intensities"], geometry, transform, **options)
    return stem_problem(sample, transform, **options)


def load_test_problem(modality: str, cfg: dict, case: Mapping[str, str], *, solver_tuning: str | None = None,
                      volumes: str | None = None, mask: str | None = None, sample: str | None = None,
                      transform: str | None = None) -> tuple[Any, np.ndarray, float | None, dict]:
    """(problem, ground truth, sigma or None, id columns) of one test volume or sample, from its files.

    `case` names it as the reconstruct rules' wildcards do: dataset, mask and sample (the volume's
    index in the array file `volumes`) for MRI, measured with the mask file `mask` and the noise
    seed config seed + index; split and sample for 4D-STEM, read from the sample file `sample` in
    the prior's units of the `transform` file. `solver_tuning`: the tuning file of DRIFT's solver.
    """
    if modality == "mri":
        index = int(case["sample"])
        volume = np.asarray(np.load(volumes, mmap_mode="r")[index], np.float32)
        problem = build_problem("mri", cfg, volume=volume, mask=np.load(mask), seed=cfg["seed"] + index,
                                solver_tuning=solver_tuning)
        return problem, volume, None, {"dataset": case["dataset"], "sample": case["sample"], "mask": case["mask"]}
    data = load_sample(sample)
    problem = build_problem("stem", cfg, sample=data, transform=load_transform(transform), solver_tuning=solver_tuning)
    ids = {"dataset": "cubic" if case["split"] == "test" else "hexagonal", "sample": case["sample"],
           "mask": "full", "crystal": str(data["name"])}
    return problem, np.asarray(data["potential"], np.float32), float(data["sigma"]), ids


def load_val_problems(modality: str, cfg: dict, n_val: int, *, val: str | Sequence[str], mask: str | None = None,
                      transform: str | None = None,
                      solver_tuning: str | None = None) -> list[tuple[Any, np.ndarray, float | None]]:
    """[(problem, truth, sigma)] of the first `n_val` validation volumes or samples, from their files.

    MRI: `val` is the (N, S, H, W) array, measured with the mask file `mask`; 4D-STEM: `val` lists
    the sample files, in the prior's units of the `transform` file. `solver_tuning`: as for
    `load_test_problem`.
    """
    if modality == "mri":
        volumes = np.load(val)[:n_val]
        measured_with = np.load(mask)
        # validation volumes are measured with seeds the test volumes never use
        return [(build_problem("mri", cfg, volume=v, mask=measured_with, seed=cfg["seed"] + 100_000 + i,
                               solver_tuning=solver_tuning), np.asarray(v, np.float32), None)
                for i, v in enumerate(volumes)]
    units = load_transform(transform)
    out = []
    for path in list(val)[:n_val]:
        data = load_sample(path)
        out.append((build_problem("stem", cfg, sample=data, transform=units, solver_tuning=solver_tuning),
                    np.asarray(data["potential"], np.float32), float(data["sigma"])))
    return out


def validation_problems(results: str | Path, cfg: dict, modality: str, n_val: int | None = None, *,
                        solver_tuning: bool = True, mask: str | None = None) -> list[tuple[Any, np.ndarray, float | None]]:
    """The validation problems that tune_dart and tune_drift see, read from a run's `results` folder.

    For scripts outside the workflow (benchmarks/): the same files in the same order, the same
    noise seeds and problem settings as the rules, from a validated config; `n_val` defaults to
    `recon.n_val`. With `solver_tuning` DRIFT's solver gets the weight its baseline was tuned to
    (that file must exist); without it, the config's own weight. MRI volumes are measured with
    `mask` (default recon.dart.mri_tune_mask).
    """
    if modality not in MODALITIES:
        raise ConfigError(f"modality: expected one of {MODALITIES}, got {modality!r}")
    lay, rc = Layout(results), cfg["recon"]
    n_val = rc["n_val"][modality] if n_val is None else n_val
    if modality == "mri":
        mask = mask or rc["dart"]["mri_tune_mask"]
        files = {"val": lay.mri_split("val"), "mask": lay.mri_mask(mask)}
        tuning, problem_cfg = lay.tuning("mri", rc["drift"]["mri_solver"], mask), mri_problem_config(cfg)
    else:
        names = recon_order([r for r in stem_plan(cfg) if r["split"] == "val"])[:n_val]
        files = {"val": [lay.stem_sample("val", name) for name in names], "transform": lay.stem_scale()}
        tuning, problem_cfg = lay.tuning("stem", rc["drift"]["stem_solver"]), stem_problem_config(cfg)
    if solver_tuning:
        files["solver_tuning"] = tuning
    for path in (p for v in files.values() for p in (v if isinstance(v, list) else [v])):
        if not Path(path).is_file():
            raise InputError(f"{path}: missing; validation_problems reads a finished run's results folder "
                             f"(run the default pipeline first)")
    return load_val_problems(modality, problem_cfg, n_val, **files)
