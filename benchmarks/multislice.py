"""Benchmark: our torch multislice forward against abTEM 1.0.11, single-threaded, one process.

For each grid size it times, on the same CoPt3 potential slices, probe and scan:
  abTEM    Probe.scan(potential, GridScan, PixelatedDetector), eager, FFTW, 1 thread;
  forward  MultisliceModel.forward (complex64, batches of --batch positions);
  fwd+grad loss_and_grad (Eq. 2 of docs/method.md, amplitude form), forward plus backward;
  FFT loop a plain torch.fft.fft2 loop doing the forward's 2S FFTs per position on the same
           batches: the FFT-bound limit of the forward.
Positions per second are the best of --repeats runs. Usage:
  python benchmarks/multislice.py [--gpts 96 128] [--slices 8] [--scan 16] [--batch 16]
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads: abTEM and numpy single-threaded

import argparse  # noqa: E402
import time  # noqa: E402

import abtem  # noqa: E402
import ase  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from abtem.core.energy import energy2sigma, energy2wavelength  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from physdiff.physics.multislice import MultisliceGeometry, MultisliceModel  # noqa: E402
from physdiff.physics.stem_loss import loss_and_grad  # noqa: E402


def best_times(fns: dict, repeats: int) -> dict:
    """Best wall time of each callable; run round-robin so load from other processes on a
    shared machine hits all of them alike."""
    for fn in fns.values():
        fn()  # warm-up: FFTW plans, torch allocator
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def setup(gpts: int, slices: int, scan: int):
    """CoPt3 cells filling a ~11.6 Å square, `slices` slices of 1.925 Å."""
    a = 3.85
    cell = ase.Atoms("CoPt3", scaled_positions=[(0, 0, 0), (.5, .5, 0), (.5, 0, .5), (0, .5, .5)],
                     cell=[a, a, a], pbc=True)
    atoms = cell * (3, 3, max(1, round(slices * 1.925 / a)))
    potential = abtem.Potential(atoms, gpts=gpts, slice_thickness=atoms.cell[2, 2] / slices)
    built = potential.build()
    probe = abtem.Probe(energy=200e3, semiangle_cutoff=20.0, defocus=0.0)
    probe.grid.match(potential)
    grid_scan = abtem.GridScan(start=(0, 0), end=(1, 1), fractional=True, gpts=(scan, scan),
                               potential=potential)
    geometry = MultisliceGeometry(
        energy=200e3, semiangle=20.0, defocus=0.0, sampling=built.sampling, gpts=built.gpts,
        slice_thickness=built.slice_thickness, sigma=energy2sigma(200e3),
        wavelength=energy2wavelength(200e3), positions=grid_scan.get_positions(), max_angle="valid")
    return built, probe, grid_scan, geometry


def run(gpts: int, slices: int, scan: int, batch: int, repeats: int) -> dict:
    built, probe, grid_scan, geometry = setup(gpts, slices, scan)
    detector = abtem.PixelatedDetector(max_angle="valid")
    n_pos = scan * scan
    model = MultisliceModel(geometry, device="cpu", dtype=torch.complex64)
    potential = torch.from_numpy(built.array.astype(np.float32))
    with torch.no_grad():
        intensities = model.forward(potential, batch_size=batch)
    waves = torch.randn(batch, gpts, gpts, dtype=torch.complex64)
    n_fft = 2 * built.array.shape[0]  # probe ifft + 2 per inner slice + detector fft

    def forward():
        with torch.no_grad():
            model.forward(potential, batch_size=batch)

    def fft_loop():
        for _ in range(0, n_pos, batch):
            w = waves
            for _ in range(n_fft):
                w = torch.fft.fft2(w)

    t = best_times({
        "abtem": lambda: probe.scan(built, scan=grid_scan, detectors=detector),
        "forward": forward,
        "grad": lambda: loss_and_grad(model, potential, intensities, batch_size=batch),
        "fft": fft_loop,
    }, repeats)
    return {"gpts": gpts, "slices": built.array.shape[0], "positions": n_pos,
            **{name: n_pos / seconds for name, seconds in t.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpts", type=int, nargs="+", default=[96, 128], help="grid sizes (square)")
    parser.add_argument("--slices", type=int, default=8, help="number of potential slices")
    parser.add_argument("--scan", type=int, default=16, help="scan positions per side")
    parser.add_argument("--batch", type=int, default=16, help="positions per torch batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best counts")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    abtem.config.set({"dask.lazy": False, "diagnostics.progress_bar": False, "fftw.threads": 1})
    rows = []
    with threadpool_limits(limits=1):
        for gpts in args.gpts:
            rows.append(run(gpts, args.slices, args.scan, args.batch, args.repeats))
    header = (f"{'grid':>6} {'S':>3} {'P':>5} | {'abTEM pos/s':>11} {'ours pos/s':>10} {'ours/abTEM':>10} | "
              f"{'fwd+grad pos/s':>14} {'(fwd+grad)/fwd':>14} | {'FFT-bound pos/s':>15} {'fwd/FFT-bound':>13}")
    print("1 thread, complex64, CoPt3, 200 kV, 20 mrad; time ratios are cost ratios")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['gpts']:>4}^2 {r['slices']:>3} {r['positions']:>5} | {r['abtem']:>11.0f} {r['forward']:>10.0f} "
              f"{r['forward'] / r['abtem']:>10.2f} | {r['grad']:>14.0f} {r['forward'] / r['grad']:>14.2f} | "
              f"{r['fft']:>15.0f} {r['forward'] / r['fft']:>13.2f}")


if __name__ == "__main__":
    main()
