"""DRIFT against the size N of its candidate pool, on validation: does a larger pool hold the measured volume?

    python benchmarks/studies/drift_pool_size.py --modality stem --models g0.pt g1.pt --pool 8 32 128 512 --n 10 --k 10
    python benchmarks/studies/drift_pool_size.py --modality mri --models g0.pt g1.pt --pool 8 32 --n 4

One pool of max(--pool) volumes is drawn as the drift_candidates rule draws it (its seed, the
config's sampler and seams); the pool of N is its first N volumes, so each larger pool holds the
smaller ones. Every validation problem (`physdiff.recon.run_prior.validation_problems`: the
samples, noise and solver settings that tune_drift sees) scores every candidate once, as DRIFT
does (SSIM against what the measurement shows, no ground truth). Then, for each N, DRIFT refines
the best of the first N with K solver iterations. Printed per N, as means over the problems:
  score   the chosen candidate's score (bright field or zero-filled SSIM against the measurement);
  start   the chosen candidate's SSIM against the ground truth, before the solver;
  oracle  the best ground-truth SSIM among the first N candidates: what a perfect score could
          pick (a diagnostic only; DRIFT never sees the ground truth);
  DRIFT   SSIM after K iterations from the chosen candidate;
and once, the physics-only twin (the same solver and K from the naive start); several --k values
reuse the pool and the scores. `--tune-solver` (4D-STEM) first chooses the solver's weight as the
tune_stem_baseline rule does, for a results folder without tuning files. `--align` shifts
every 4D-STEM candidate to its best bright-field match first (`recon.drift.stem_align`);
`--diagnose` also refines, at the largest N, the candidate of lowest data loss and the oracle's, and
tries two more picks: refine the --refine-top best-scored candidates (and V = 0), keep the result
of lowest data loss.
Runs on CUDA where there is one (the 4D-STEM forward model and the prior), else on the CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml


def tune_solver(results: str, cfg: dict, solver: str) -> dict:
    """DRIFT's 4D-STEM solver tuned as the tune_stem_baseline rule tunes it, on the same samples."""
    from physdiff.data.plan import stem_plan, stem_tuning_samples
    from physdiff.data.stem_sim import load_sample
    from physdiff.recon.run import tune_stem_baseline
    from physdiff.results import Layout

    stem = cfg["recon"]["stem"]
    paths = [Layout(results).stem_sample("val", name)
             for name in stem_tuning_samples(stem_plan(cfg), stem["tuning"]["n_val"])]
    t0 = time.perf_counter()
    tuned = tune_stem_baseline([load_sample(p) for p in paths], method=solver, grid=stem["tuning"]["grids"][solver],
                               max_iter=stem["tuning"]["max_iter"][solver], settings=stem[solver], loss=stem["loss"],
                               max_extend=stem["tuning"]["max_extend"], refine=stem["tuning"]["refine"],
                               device="cuda" if torch.cuda.is_available() else "cpu")
    print(f"{solver} tuned on {[p.name for p in paths]} in {time.perf_counter() - t0:.0f} s: {tuned['param']} = "
          f"{tuned['value']:g}, n_iter = {tuned['n_iter']}, validation SSIM {tuned['ssim_mean']:.4f} "
          f"(by value: {[(r['value'], round(r['ssim_mean'], 4), r['n_iter']) for r in tuned['table']]})", flush=True)
    return tuned


def main() -> None:
    from physdiff.config import drift_pool_seed, validate_config
    from physdiff.models.sampling import sample_volumes
    from physdiff.recon.drift import physics_only, score_candidates
    from physdiff.recon.run import stem_params
    from physdiff.recon.run_prior import load_partition_models, score, validation_problems
    from physdiff.results import Layout
    from physdiff.workflow import set_threads

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modality", choices=["mri", "stem"], default="stem")
    ap.add_argument("--models", nargs="+", required=True, help="partition model files g = 0..G-1")
    ap.add_argument("--pool", type=int, nargs="+", default=[8, 32, 128], help="pool sizes N")
    ap.add_argument("--n", type=int, default=None, help="validation volumes or samples (default: recon.n_val)")
    ap.add_argument("--k", type=int, nargs="+", default=None,
                    help="DRIFT's K, one or more values (default: tune_drift's choice)")
    ap.add_argument("--no-solver-tuning", action="store_true", help="the config's solver weight, not the tuned one")
    ap.add_argument("--tune-solver", action="store_true",
                    help="4D-STEM: first tune the solver's weight as the tune_stem_baseline rule does (its samples, "
                         "grid and caps from the config) and use that choice, instead of reading the run's tuning file")
    ap.add_argument("--batch", type=int, default=None, help="volumes per sampling batch (default: prior.generate)")
    ap.add_argument("--stem-batch", type=int, default=None,
                    help="scan positions per forward batch (default: MultisliceModel.scan_batch's choice for the device)")
    ap.add_argument("--results", default="results")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--align", action="store_true",
                    help="4D-STEM: shift every candidate laterally to its best bright-field match first "
                         "(recon.drift.stem_align)")
    ap.add_argument("--no-twin", action="store_true", help="skip the physics-only twin")
    ap.add_argument("--diagnose", action="store_true",
                    help="4D-STEM: at the largest N also refine the candidate of lowest data loss (Eq. 2 on the "
                         "whole 4D data, no ground truth) and the oracle's pick (ground truth: a diagnostic only)")
    ap.add_argument("--refine-top", type=int, default=4,
                    help="with --diagnose: also refine this many best-scored candidates and V = 0 with K sweeps "
                         "each and keep the lowest data loss (a pick without ground truth)")
    ap.add_argument("--save", default=None, help="write every score and SSIM to this JSON file")
    args = ap.parse_args()
    if (args.align or args.diagnose) and args.modality != "stem":
        raise SystemExit("--align and --diagnose are for 4D-STEM")
    if min(args.pool) < 1:
        raise SystemExit(f"--pool: sizes must be >= 1, got {args.pool}")
    set_threads(args.threads)
    cfg = validate_config(yaml.safe_load(Path(args.config).read_text()))
    Ks = args.k or [json.loads(Layout(args.results).tuning(args.modality, "drift").read_text())["n_iter"]]
    solver, tuned = cfg["recon"]["drift"]["stem_solver"], None
    if args.tune_solver:
        if args.modality != "stem":
            raise SystemExit("--tune-solver is for 4D-STEM")
        tuned = tune_solver(args.results, cfg, solver)
    problems = validation_problems(args.results, cfg, args.modality, args.n,
                                   solver_tuning=not (args.no_solver_tuning or args.tune_solver))
    shape = problems[0][0].shape
    models = load_partition_models(args.models, slices=shape[0], size=shape[1:])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n_max = max(args.pool)
    print(f"{args.modality}: {len(problems)} validation problems, pool sizes {sorted(args.pool)}, K = {Ks}, "
          f"on {torch.cuda.get_device_name() if device == 'cuda' else 'the CPU'}", flush=True)

    t0 = time.perf_counter()
    pool = sample_volumes(models, n_max, tuple(shape), batch_size=args.batch or cfg["prior"]["generate"]["batch_size"],
                          seed=drift_pool_seed(cfg), progress=False, **cfg["prior"]["sampling"])
    print(f"pool of {n_max}: {time.perf_counter() - t0:.1f} s", flush=True)

    # score every candidate once per problem; the solves below reuse the scores for every K
    scored, t_score = [], 0.0
    for problem, truth, sigma in problems:
        if args.modality == "stem":
            problem.batch_size = args.stem_batch
            if tuned is not None:  # the solver's weight and settings as the tuning just chose them
                problem.solver_params = stem_params(solver, cfg["recon"]["stem"][solver], tuned)
        if args.align:  # as STEMProblem sets it from recon.drift.stem_align: only where the scan tiles the cell
            problem.align_candidates = problem.periodic_scan()
        t0 = time.perf_counter()
        decoded, scores = score_candidates(problem.transform.decode(pool), problem)
        t_score += time.perf_counter() - t0
        truth_ssim = np.array([score(args.modality, c, truth, sigma)["ssim"] for c in decoded])
        scored.append((problem, truth, sigma, decoded, np.asarray(scores), truth_ssim))
    print(f"scoring (and aligning) {t_score:.0f} s", flush=True)

    log = {"pool": sorted(args.pool), "K": Ks, "tuned_solver": tuned, "by_K": {}}
    for K in Ks:
        print(f"\nK = {K}", flush=True)
        rows = {n: {"score": [], "start": [], "oracle": [], "drift": []} for n in sorted(args.pool)}
        twins, diag, entries, t_solve = [], {}, [], 0.0
        for problem, truth, sigma, decoded, scores, truth_ssim in scored:
            entry = {"scores": scores.tolist(), "truth_ssim": truth_ssim.tolist(), "drift": {}}
            solved: dict[int, tuple[np.ndarray, float]] = {}

            def refine(i: int) -> tuple[np.ndarray, float]:
                """Candidate i after K solver iterations and its SSIM; each candidate is solved once per K."""
                nonlocal t_solve
                if i not in solved:
                    t0 = time.perf_counter()
                    volume = problem.solve(decoded[i], K)
                    t_solve += time.perf_counter() - t0
                    solved[i] = (volume, score(args.modality, volume, truth, sigma)["ssim"])
                return solved[i]

            for n in sorted(args.pool):
                best = int(np.argmax(scores[:n]))
                ssim = refine(best)[1]  # drift() on the first n, without scoring them again
                for key, value in (("score", scores[best]), ("start", truth_ssim[best]),
                                   ("oracle", truth_ssim[:n].max()), ("drift", ssim)):
                    rows[n][key].append(float(value))
                entry["drift"][n] = {"best": best, "ssim": ssim}
            if args.diagnose and args.modality == "stem":
                losses = np.array([problem.loss(c) for c in decoded])
                for key, pick in (("loss", int(np.argmin(losses))), ("oracle", int(np.argmax(truth_ssim)))):
                    ssim = refine(pick)[1]
                    diag.setdefault(key, []).append((float(truth_ssim[pick]), ssim))
                    entry[f"pick_{key}"] = {"index": pick, "start": float(truth_ssim[pick]), "ssim": ssim}
                entry["losses"] = losses.tolist()
            twin = None if args.no_twin else physics_only(problem, n_iter=K).volume
            twins.append(np.nan if twin is None else score(args.modality, twin, truth, sigma)["ssim"])
            entry["twin"] = twins[-1]
            if args.diagnose and args.modality == "stem" and twin is not None:
                # refine the --refine-top best-scored candidates of the largest pool, keep the result of
                # lowest data loss, V = 0's (the twin's) among them: a pick that sees only the measurement
                # (and the same pick without V = 0: the prior's candidates alone)
                top = np.argsort(-scores)[: args.refine_top]
                refined = [(problem.loss(twin), twins[-1], -1)] + [
                    (problem.loss(refine(int(i))[0]), refine(int(i))[1], int(i)) for i in top]
                entry["refined"] = [{"index": i, "loss": loss, "ssim": ssim} for loss, ssim, i in refined]
                for key, options in (("refined", refined), ("refined_prior", refined[1:])):
                    _, ssim, pick = min(options, key=lambda r: r[0])
                    start = 0.0 if pick < 0 else float(truth_ssim[pick])
                    diag.setdefault(key, []).append((start, ssim))
                    entry[f"pick_{key}"] = {"index": pick, "start": start, "ssim": ssim}
            entries.append(entry)
            print(f"problem {len(twins)}: best score {scores.max():.3f}, DRIFT "
                  + ", ".join(f"N={n} {entry['drift'][n]['ssim']:.4f}" for n in sorted(args.pool))
                  + "".join(f", by {k} {entry[f'pick_{k}']['ssim']:.4f}" for k in ("loss", "oracle", "refined", "refined_prior")
                            if f"pick_{k}" in entry)
                  + f", twin {twins[-1]:.4f}", flush=True)
        log["by_K"][K] = entries

        print(f"\nK = {K}: solver runs {t_solve:.0f} s in all (each candidate once)\n")
        print("| N | score | start | oracle | DRIFT |\n|---|---|---|---|---|")
        for n, r in rows.items():
            print(f"| {n} | " + " | ".join(f"{np.mean(r[k]):.4f} ± {np.std(r[k]):.4f}"
                                           for k in ("score", "start", "oracle", "drift")) + " |")
        for key, what in (("loss", "lowest data loss (Eq. 2)"), ("oracle", "oracle (ground truth)"),
                          ("refined", f"lowest data loss after K sweeps, of the best {args.refine_top} by score "
                                      "and V = 0"),
                          ("refined_prior", f"lowest data loss after K sweeps, of the best {args.refine_top} by "
                                            "score")):
            if key in diag:
                start, ssim = np.array(diag[key]).T
                print(f"N = {n_max}, pick by {what}: start {np.mean(start):.4f} ± {np.std(start):.4f}, "
                      f"DRIFT {np.mean(ssim):.4f} ± {np.std(ssim):.4f}")
        if not args.no_twin:
            print(f"physics-only twin (K = {K}): {np.mean(twins):.4f} ± {np.std(twins):.4f}", flush=True)
        if args.save:  # after every K, so a run cut short keeps what it measured
            Path(args.save).write_text(json.dumps(log, indent=1, default=float))

if __name__ == "__main__":
    main()
