"""`physdiff stem`: reconstruct the potential slices of a measured 4D-STEM dataset (no ground truth)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from physdiff.cli.common import (Formatter, Stopwatch, add_common, beside, check_output, check_slices,
                                 dart_settings_of, drift_candidates, drift_k_m, note, partition_models,
                                 resolve_config, tuned, write_outputs)
from physdiff.errors import InputError
from physdiff.results import Layout

DESCRIPTION = """\
Reconstruct the potential slices of a measured 4D-STEM dataset: no ground truth, no crystal.

DATA holds the diffraction patterns with axes (scan rows, scan columns, detector rows, detector
columns), the detector's rows running along the scan's rows (rotate the patterns first if your
microscope has a scan-detector rotation):
  .npy                   the 4D array alone (a 3D stack of frames with --scan-shape);
  .h5 .hdf5 .emd         EMD 1.0 as py4DSTEM writes it (read with emdfile; py4DSTEM itself is not
                         needed): the 4D array node (--dataset where there are several) with the
                         scan step and detector pixel of its calibration;
  .emd .mib .dm3 .dm4 .hspy  Velox EMD, Merlin, Gatan and HyperSpy files through RosettaSciIO:
                         the axes' scales, beam energy and convergence angle where recorded.
emdfile and RosettaSciIO come with the pip extra: pip install -e '.[stem-io]'.

The probe, scan and slicing come from the file's calibration, then the --metadata YAML, then
the options, each overriding the one before (units: eV, mrad, Å):
  energy: 200000       semiangle: 20.0     defocus: 0.0 (abTEM sign: defocus = -C10)
  scan_step: 0.5       detector_pixel: 1.2   detector_unit: mrad (or 1/A)
  slice_thickness: 2.0 n_slices: 8

The forward model is a periodic multislice cell on a --gpts x --gpts grid: the detector pixel d
sets its extent, 1e3 wavelength / d Å, so the scan must fit inside it (--scan-region takes part
of a larger scan), and the grid fixes the modelled detector (about 0.47 gpts pixels across with
--max-angle valid), cut from the patterns around the direct beam (--center). Patterns are put in
units of the incident beam (--normalize mean: each sums to about 1 on average; none: they
already are, as physdiff's simulations write them).

Methods: drift and dart (ours; the run's trained 4D-STEM prior from --results: partition models,
the potential scaling stored with the prior, DRIFT's pool, tuned settings, else the config's, with
a note), and the baselines 3pie, torchslice and sparse (sparse decomposition), with the run's
tuned weight and iteration count where it has them, else the config's recon.stem settings. The
prior was trained on potentials of stem.simulation.n_slices slices on a stem.simulation.gpts grid:
the prior methods need that grid and slice count (--gpts, n_slices), and a pixel size near the
training one (stem.simulation.extent / gpts, printed), else their atoms have a size it never saw.

Output: --out, the potential slices (S, gpts, gpts) in V·Å as .npy, and beside it a PNG of the
projected phase sum_s sigma V_s with the measured bright field; both only once all succeeded.
"""

EPILOG = """\
examples:
  physdiff stem scan.npy --metadata probe.yaml --out potential.npy --method sparse
  physdiff stem data.h5 --energy 300000 --semiangle 25 --slice-thickness 2 --n-slices 8 \\
      --out potential.npy --method drift --results results
  physdiff stem frames.npy --scan-shape 64 64 --metadata probe.yaml --scan-region 0 16 0 16 --out v.npy
"""

METHODS = {"drift": "drift", "dart": "dart", "3pie": "three_pie", "three_pie": "three_pie",
           "torchslice": "torchslice", "sparse": "sparse_decomposition", "sparse_decomposition": "sparse_decomposition"}


def add_parser(sub) -> None:
    p = sub.add_parser("stem", help="reconstruct the potential of a measured 4D-STEM dataset",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=Formatter)
    p.add_argument("data", help="the 4D-STEM data: .npy, EMD 1.0 (.h5, .hdf5, .emd), .mib, .dm3, .dm4, .hspy")
    p.add_argument("--out", required=True, help="the potential slices, a .npy (a .png goes beside it)")
    p.add_argument("--method", default="drift", choices=list(METHODS), help="reconstruction method")
    p.add_argument("--metadata", help="a YAML file of probe, scan and slicing keys (see above)")
    meta = p.add_argument_group("probe, scan and slicing (override the file and --metadata)")
    meta.add_argument("--energy", type=float, help="beam energy, eV")
    meta.add_argument("--semiangle", type=float, help="probe convergence semi-angle, mrad")
    meta.add_argument("--defocus", type=float, help="defocus, Å (abTEM's sign: defocus = -C10; file default 0)")
    meta.add_argument("--scan-step", type=float, nargs="+", metavar="Å", help="scan step: one value or rows columns")
    meta.add_argument("--detector-pixel", type=float, nargs="+", metavar="D",
                      help="one detector pixel: one value or rows columns, in --detector-unit")
    meta.add_argument("--detector-unit", choices=["mrad", "1/A"], help="unit of --detector-pixel (default mrad)")
    meta.add_argument("--slice-thickness", type=float, help="thickness of each slice, Å")
    meta.add_argument("--n-slices", type=int, help="slices of the potential (the prior methods: stem.simulation.n_slices)")
    grid = p.add_argument_group("data and model grid")
    grid.add_argument("--gpts", type=int, default=None,
                      help="potential grid points per side (default: the config's stem.simulation.gpts, the prior's)")
    grid.add_argument("--max-angle", default="valid", choices=["valid", "cutoff", "full"],
                      help="the modelled detector's reach, as abTEM's PixelatedDetector")
    grid.add_argument("--center", default="com", choices=["com", "middle"],
                      help="the direct beam: centre of mass of the mean pattern, or the middle pixel")
    grid.add_argument("--normalize", default="mean", choices=["mean", "none"], help="intensity units (see above)")
    grid.add_argument("--scan-region", type=int, nargs=4, metavar=("R0", "R1", "C0", "C1"),
                      help="reconstruct only scan rows R0..R1-1 and columns C0..C1-1")
    grid.add_argument("--scan-shape", type=int, nargs=2, metavar=("ROWS", "COLS"),
                      help="the scan of a 3D stack of frames (N = ROWS x COLS, row by row)")
    grid.add_argument("--dataset", help="which array of a file that holds several (EMD node path, or index/title)")
    p.add_argument("--seed", type=int, default=None, help="DART's seed (default: the config's seed)")
    add_common(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from physdiff.data.stem_files import read_measurement
    from physdiff.data.stem_measured import STEMMetadata, geometry_from_metadata, load_metadata, prepare_patterns

    clock = Stopwatch()
    cfg, _ = resolve_config(args.config)
    method, lay = METHODS[args.method], Layout(args.results)
    out = check_output(args.out, (".npy",))
    data, from_file = read_measurement(args.data, dataset=args.dataset,
                                       scan_shape=tuple(args.scan_shape) if args.scan_shape else None,
                                       region=tuple(args.scan_region) if args.scan_region else None)
    meta = STEMMetadata(**from_file)
    if args.metadata:
        meta = meta.merged(**load_metadata(args.metadata))
    one = lambda values: values[0] if values and len(values) == 1 else values  # noqa: E731
    meta = meta.merged(energy=args.energy, semiangle=args.semiangle, defocus=args.defocus,
                       scan_step=one(args.scan_step), detector_pixel=one(args.detector_pixel),
                       detector_unit=args.detector_unit,
                       slice_thickness=args.slice_thickness, n_slices=args.n_slices)
    sim = cfg["stem"]["simulation"]
    gpts = args.gpts or int(sim["gpts"])
    if method in ("dart", "drift") and gpts != int(sim["gpts"]):
        raise InputError(f"--gpts {gpts}: {method}'s prior was trained on {sim['gpts']}-point grids "
                         f"(stem.simulation.gpts); leave --gpts out, or give the --config of the run that trained it")
    where = f"{args.data}" + (f" with {args.metadata}" if args.metadata else "")
    geometry = geometry_from_metadata(meta, data.shape[:2], gpts=gpts, max_angle=args.max_angle, where=where)
    patterns, done = prepare_patterns(data, geometry, center=args.center, normalize=args.normalize, where=args.data)
    summarize(geometry, done, meta, sim)
    potential = reconstruct(method, patterns, geometry, cfg, lay, seed=cfg["seed"] if args.seed is None else args.seed)
    if not np.all(np.isfinite(potential)):
        raise InputError(f"{method} diverged on {args.data} (NaN or infinite values); nothing written")
    bright_field = measured_bright_field(patterns, geometry)
    phase = geometry.sigma * potential.sum(0)
    print(f"{method}: potential {potential.shape[0]} x {potential.shape[1]} x {potential.shape[2]}, "
          f"{float(potential.min()):.3g}..{float(potential.max()):.3g} V·Å; projected phase "
          f"{float(phase.min()):.3g}..{float(phase.max()):.3g} rad")
    png = beside(out, ".png", strip=(".npy",))
    title = f"{method}: {Path(args.data).name}"
    write_outputs([(out, ".npy", lambda tmp: np.save(tmp, potential.astype(np.float32))),
                   (png, ".png", png_writer(phase, bright_field, title, geometry.sampling))])
    print(f"wrote {out} and {png} in {clock}")


def summarize(geometry, done: dict, meta, sim: dict) -> None:
    """What the data became: the cell, grid, scan and slicing, and what was cut."""
    g = geometry
    extent = [n * d for n, d in zip(g.gpts, g.sampling)]
    print(f"probe {g.energy / 1e3:g} keV, {g.semiangle:g} mrad, defocus {g.defocus:g} Å; cell {extent[0]:.2f} x "
          f"{extent[1]:.2f} Å on {g.gpts[0]} x {g.gpts[1]} points ({g.sampling[0]:.4f} Å); scan {g.scan_shape[0]} x "
          f"{g.scan_shape[1]}; {g.n_slices} slices of {g.slice_thickness[0]:g} Å", flush=True)
    print(f"patterns: {done['measured'][0]} x {done['measured'][1]} detector pixels, {done['detector'][0]} x "
          f"{done['detector'][1]} modelled around the direct beam at {done['center']}; divided by {done['scale']:.4g}")
    if done["negative"]:
        note(f"{done['negative']} negative values (dark noise) set to 0")
    trained = float(sim["extent"]) / int(sim["gpts"])
    if not 0.67 < g.sampling[0] / trained < 1.5:
        note(f"pixel {g.sampling[0]:.4f} Å; the run's prior saw about {trained:.4f} Å (stem.simulation.extent / gpts): "
             "the prior methods work best near it")


def reconstruct(method: str, patterns: np.ndarray, geometry, cfg: dict, lay: Layout, *, seed: int) -> np.ndarray:
    """The potential (S, H, W) in V·Å of the measured patterns with one method."""
    import torch

    from physdiff.config import stem_problem_config
    from physdiff.recon.run import STEM_BASELINES, stem_params

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rc = cfg["recon"]
    if method in STEM_BASELINES:
        chosen = tuned(lay.tuning("stem", method), f"{method}'s weight and iterations", f"the config's recon.stem.{method}",
                       keys=("value", "n_iter"))
        params = stem_params(method, rc["stem"][method], chosen)
        if method != "three_pie":
            params["form"] = rc["stem"]["loss"]
        potential, _ = STEM_BASELINES[method](patterns, geometry, device=device, progress=False, **params)
        return potential.detach().cpu().numpy().astype(np.float32)
    from physdiff.data.transforms import load_transform
    from physdiff.recon.run_prior import build_problem

    scale = lay.stem_scale()
    if not scale.is_file():
        raise InputError(f"{scale}: missing; {method} needs the run's potential scaling (the prior_data_stem rule)")
    transform, problem_cfg = load_transform(scale), stem_problem_config(cfg)
    solver_file = lay.tuning("stem", problem_cfg["solver"])
    if not tuned(solver_file, f"the solver's ({problem_cfg['solver']}) weight", f"recon.stem.{problem_cfg['solver']}",
                 keys=("value", "n_iter")):
        solver_file = None
    problem = build_problem("stem", problem_cfg, sample={"intensities": patterns}, geometry=geometry,
                            transform=transform, solver_tuning=str(solver_file) if solver_file else None, device=device)
    if method == "drift":
        from physdiff.recon.drift import drift

        if min(geometry.scan_shape) < 7:  # skimage's SSIM window
            raise InputError(f"drift scores its candidates by the SSIM of their bright-field images, which needs a "
                             f"scan of at least 7 x 7 positions; this one has {geometry.scan_shape[0]} x "
                             f"{geometry.scan_shape[1]}")
        k, m = drift_k_m(lay, "stem", cfg)
        candidates = transform.decode(drift_candidates(lay, "stem", problem.shape, cfg))
        return drift(candidates, problem, n_iter=k, refine_top=m, progress=False).volume
    from physdiff.recon.dart import dart
    from physdiff.recon.run_prior import dart_options

    G = rc["partitions"]["stem"]
    paths = lay.prior_models("stem", G)
    models = partition_models(paths, modality="stem", G=G, slices=problem.shape[0], size=problem.shape[1:])
    check_slices(models, paths, problem.shape[0], "n_slices, stem.simulation.n_slices")
    settings = dart_settings_of(lay, "stem", cfg)
    return dart(models, problem, progress=False, **dart_options(settings, seed)).volume


def measured_bright_field(patterns: np.ndarray, geometry) -> np.ndarray:
    """The bright-field image of the patterns (scan grid), as the forward model integrates it."""
    import torch

    from physdiff.physics.multislice import MultisliceModel

    model = MultisliceModel(geometry, device="cpu")
    with torch.no_grad():
        return model.bright_field(intensities=torch.as_tensor(patterns, dtype=model.real_dtype)).numpy()


def png_writer(phase: np.ndarray, bright_field: np.ndarray, title: str, sampling):
    from physdiff.plots.command import phase_figure

    def write(tmp: Path) -> None:
        import matplotlib.pyplot as plt

        fig = phase_figure(phase, bright_field, title=title, sampling=sampling)
        fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)

    return write
