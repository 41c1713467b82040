"""Where py4DSTEM and our 4D-STEM baselines part: SSIM after every iteration, and Torchslice with positivity.

    python benchmarks/studies/py4dstem_gaps.py trace --method sparse_decomposition --split ood --sample WC_11-20_0
    python benchmarks/studies/py4dstem_gaps.py trace --method py4dstem --step-size 1 --n-iter 20 --split ood --sample Co_0001_0
    python benchmarks/studies/py4dstem_gaps.py torchslice-positivity --n-iter 60 --lr 0.9 3

`trace` runs one method on one sample with its tuned settings (`Layout.tuning("stem", method)`;
py4DSTEM's from --step-size/--n-iter, through benchmarks/py4dstem_check.py) and prints the
phase-projection SSIM after every iteration and the loss the solver reports (Eq. 2 for ours,
py4DSTEM's own error for py4DSTEM). --n-iter overrides the tuned count.
`torchslice-positivity` runs Torchslice on the validation samples that tune it, as it is and
with V clamped at 0 after every Adam step, at each --lr, and prints the best and last SSIM.
Findings: benchmarks/py4dstem.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from physdiff.config import load_config
from physdiff.data.plan import stem_plan, stem_tuning_samples
from physdiff.data.stem_sim import load_sample
from physdiff.metrics.ssim import ssim_phase_projection
from physdiff.physics.multislice import MultisliceGeometry, MultisliceModel
from physdiff.physics.stem_loss import data_loss, loss_and_grad
from physdiff.recon import run
from physdiff.results import Layout

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, where py4dstem_check.py is
import py4dstem_check  # noqa: E402


def trace(args, cfg, lay) -> None:
    sample = load_sample(lay.stem_sample(args.split, args.sample))
    geometry = MultisliceGeometry.from_sample(sample)
    if args.method == py4dstem_check.METHOD:
        py4dstem_check.register(args.python)
        tuned = {"value": args.step_size, "n_iter": args.n_iter or 40}
        settings = {}
    else:
        tuned = json.loads(lay.tuning("stem", args.method).read_text())
        settings = dict(cfg["recon"]["stem"][args.method])
    params = run.stem_params(args.method, settings, tuned)
    if args.n_iter:
        params["n_iter"] = args.n_iter
    ssim, losses = [], []

    def record(iteration, potential, loss):
        ssim.append(ssim_phase_projection(potential.detach().cpu().numpy(), sample["potential"], geometry.sigma))
        losses.append(loss)

    run.STEM_BASELINES[args.method](sample["intensities"], geometry, progress=False, callback=record, **params)
    print(f"{args.split}/{args.sample} {args.method} {params}: best SSIM {max(ssim):.3f} after "
          f"{int(np.argmax(ssim)) + 1} iterations, {ssim[-1]:.3f} after {len(ssim)}")
    print("SSIM:", " ".join(f"{x:.3f}" for x in ssim))
    print("loss:", " ".join(f"{x:.3g}" for x in losses))


def torchslice_positivity(args, cfg, lay) -> None:
    torch.set_num_threads(1)
    for name in stem_tuning_samples(stem_plan(cfg), cfg["recon"]["stem"]["tuning"]["n_val"]):
        sample = load_sample(lay.stem_sample("val", name))
        geometry = MultisliceGeometry.from_sample(sample)
        model = MultisliceModel(geometry, device="cpu")
        truth = sample["potential"]
        for lr in args.lr:
            plain = []
            run.STEM_BASELINES["torchslice"](
                sample["intensities"], geometry, n_iter=args.n_iter, lr=lr, model=model, progress=False,
                callback=lambda i, v, loss: plain.append(ssim_phase_projection(v.numpy(), truth, geometry.sigma)))
            v = torch.zeros((geometry.n_slices, *geometry.gpts), requires_grad=True)
            optimiser, clamped = torch.optim.Adam([v], lr=lr), []
            for _ in range(args.n_iter):  # torchslice's loop, with the projection onto V >= 0 added
                _, v.grad = loss_and_grad(model, v.detach(), sample["intensities"])
                optimiser.step()
                with torch.no_grad():
                    v.clamp_(min=0)
                gauged = v.detach() - v.detach().flatten(1).min(1).values[:, None, None]
                clamped.append(ssim_phase_projection(gauged.numpy(), truth, geometry.sigma))
            print(f"val/{name} lr {lr:g}: as it is best {max(plain):.3f} (iteration {int(np.argmax(plain)) + 1}), "
                  f"last {plain[-1]:.3f}; with positivity best {max(clamped):.3f} (iteration "
                  f"{int(np.argmax(clamped)) + 1}), last {clamped[-1]:.3f}, "
                  f"Eq. 2 {data_loss(model, v.detach(), sample['intensities']):.3g}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["trace", "torchslice-positivity"])
    ap.add_argument("--results", default="results")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--method", default="sparse_decomposition",
                    choices=[*run.STEM_BASELINES, py4dstem_check.METHOD])
    ap.add_argument("--split", default="ood")
    ap.add_argument("--sample", default="WC_11-20_0")
    ap.add_argument("--n-iter", type=int, help="iterations (default: the tuned count)")
    ap.add_argument("--step-size", type=float, default=1.0, help="py4DSTEM's step size")
    ap.add_argument("--lr", type=float, nargs="+", default=[0.9, 3.0], help="Torchslice learning rates")
    ap.add_argument("--python", default=str(py4dstem_check.PYTHON), help="the py4DSTEM venv's interpreter")
    args = ap.parse_args()
    cfg, lay = load_config(args.config), Layout(args.results)
    (trace if args.what == "trace" else torchslice_positivity)(args, cfg, lay)


if __name__ == "__main__":
    main()
