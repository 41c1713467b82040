"""How good a start DRIFT's chosen candidate is for MRI, and what it gives against the twin at each K.

    python benchmarks/studies/drift_start.py [--results results] [--mask gaussian_R4] [--volumes 3] [--k 1 3 10 100]

For each of the first test volumes, measured as the pipeline measures them (seed = its index),
prints: the candidate DRIFT's score picks from the run's MRI pool (the drift_candidates rule's)
and its SSIM against the truth, the best SSIM of any candidate against the truth, the
zero-filled start's SSIM, and, for each K, the SSIM of K projection iterations (the tuned
weight for the mask) started from the chosen candidate (DRIFT) and from the zero-filled image
(the twin). Diagnostic only: it uses the test truth, so nothing here may choose a setting.
"""

from __future__ import annotations

import argparse
import json
import numpy as np

from physdiff.metrics.ssim import ssim_volume
from physdiff.physics.mri import simulate_kspace
from physdiff.recon.mri_baselines import projection_based
from physdiff.recon.problems import MRIProblem
from physdiff.results import Layout
from physdiff.workflow import set_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results")
    parser.add_argument("--mask", default="gaussian_R4")
    parser.add_argument("--volumes", type=int, default=3)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3, 10, 100])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and BLAS threads (default: all cores); 1 when sharing the machine with other jobs")
    args = parser.parse_args()
    if args.threads:
        set_threads(args.threads)
    lay = Layout(args.results)
    candidates = np.load(lay.candidates("mri"))
    test = np.load(lay.mri_split("test"))[: args.volumes].astype(np.float32)
    mask = np.load(lay.mri_mask(args.mask))
    thresh = json.loads(lay.tuning("mri", "projection", args.mask).read_text())["value"]
    print(f"{len(candidates)} candidates, mask {args.mask}, projection threshold {thresh:.4g}")
    for i, truth in enumerate(test):
        y = simulate_kspace(truth, mask, seed=i)
        problem = MRIProblem(y, mask)
        scores = [problem.score(c) for c in candidates]
        best = int(np.argmax(scores))
        vs_truth = [ssim_volume(c, truth) for c in candidates]
        line = (f"volume {i}: chosen candidate {best} (score {scores[best]:.3f}, SSIM to truth {vs_truth[best]:.3f}; "
                f"best candidate {max(vs_truth):.3f}); zero-filled {ssim_volume(np.abs(problem.naive_start()), truth):.3f}")
        for k in args.k:
            drift = projection_based(y, mask, n_iter=k, wavelet_thresh=thresh, x0=candidates[best])
            twin = projection_based(y, mask, n_iter=k, wavelet_thresh=thresh)
            line += f" | K={k}: DRIFT {ssim_volume(drift, truth):.3f}, twin {ssim_volume(twin, truth):.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
