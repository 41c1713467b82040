"""One layer-wise sweep of sparse decomposition: kept incoming waves against the plain masked steps.

    python benchmarks/sparse_sweep.py [--results results] [--sample FILE.npz] [--sweeps 3]

`physdiff.physics.stem_loss.layerwise_sweep` (what `sparse_decomposition` runs) against the
same steps taken by `physics_step(mask=slice b)` for b = 0..S-1, which propagates every scan
position through all S slices for each slice's loss, gradient and line search. Both start at
V = 0 with the secant step and then warm steps, as the solver does; one thread, the default
4D-STEM sample size (by default the run's test sample CoPt3_001_0). Prints seconds per sweep for each, the speed-up, and the largest
difference between their iterates relative to the largest voxel.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from physdiff.data.stem_sim import load_sample
from physdiff.physics.multislice import MultisliceGeometry, MultisliceModel
from physdiff.physics.stem_loss import layerwise_sweep, physics_step
from physdiff.results import Layout


def masked_sweep(model, v, intensities, etas):
    infos = []
    for b in range(v.shape[0]):
        mask = torch.zeros((v.shape[0], 1, 1), dtype=v.dtype)
        mask[b] = 1
        v, info = physics_step(model, v, intensities, eta=etas[b], mask=mask)
        infos.append(info)
    return v, infos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results", help="the run whose test sample CoPt3_001_0 is the default")
    ap.add_argument("--sample", default=None, help="a 4D-STEM sample file (.npz) instead")
    ap.add_argument("--sweeps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sample = load_sample(args.sample or Layout(args.results).stem_sample("test", "CoPt3_001_0"))
    geometry = MultisliceGeometry.from_sample(sample)
    model = MultisliceModel(geometry, device="cpu")
    intensities = torch.from_numpy(np.asarray(sample["intensities"], np.float32))
    print(f"{sample['name']}: {geometry.n_slices} slices of {geometry.gpts}, scan {geometry.scan_shape}, "
          f"{args.threads} thread(s)")
    results = {}
    for name, sweep in (("masked physics_step", masked_sweep), ("layerwise_sweep", None)):
        v, etas, times = torch.zeros(geometry.n_slices, *geometry.gpts), [None] * geometry.n_slices, []
        for _ in range(args.sweeps):
            t0 = time.perf_counter()
            if sweep is None:
                v, infos = layerwise_sweep(model, v, intensities, etas=etas)
            else:
                v, infos = sweep(model, v, intensities, etas)
            times.append(time.perf_counter() - t0)
            etas = [2 * i["eta"] for i in infos]
        results[name] = v
        print(f"{name:<20} {np.mean(times[1:] or times):.3f} s per warm sweep (first, with the secant "
              f"estimates: {times[0]:.3f} s)")
        results[name + " s"] = np.mean(times[1:] or times)
    a, b = results["masked physics_step"], results["layerwise_sweep"]
    print(f"speed-up {results['masked physics_step s'] / results['layerwise_sweep s']:.2f}x; "
          f"max |difference| / max |V| after {args.sweeps} sweeps: {float((a - b).abs().max() / a.abs().max()):.1e}")


if __name__ == "__main__":
    main()
