"""Figure 5's sweep: rows per (method, G, steps, volume), sensible SSIMs, benchmark files read, a figure."""

import numpy as np
import pandas as pd
import pytest
import torch

from physdiff.data.phantoms import blob_volume
from physdiff.errors import InputError
from physdiff.models.diffusion import GaussianDiffusion, to_network
from physdiff.physics.mri import simulate_kspace
from physdiff.plots.figure5 import figure5_frame, plot_figure5
from physdiff.recon.problems import MRIProblem
from physdiff.recon.sweep import cost_per_device, read_benchmark, steps_sweep

DART = {"sampler": "ddim", "steps": 50, "eta": 1.0, "correction": "x0", "n_samples": 1}
DIFF = GaussianDiffusion()
BENCH = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n{s}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t0\t1\n"


def oracle_models(volume, partitions):
    """Stand-in partition models whose eps makes predict_x0 equal their slab of `volume` (as in test_dart_drift)."""
    x = to_network(torch.as_tensor(volume, dtype=torch.float32))
    s = x.shape[0]
    slabs = [x[g * s // partitions:(g + 1) * s // partitions] for g in range(partitions)]
    return [lambda xt, t, slab=slab: DIFF.eps_from_x0(xt, int(t[0]), slab.to(xt.device).expand_as(xt))
            for slab in slabs]


@pytest.fixture(scope="module")
def sweep():
    truth = blob_volume(4, 16, seed=5)
    mask = np.zeros((16, 16), bool)
    mask[:, ::4] = True
    mask[:, 7:9] = True
    problems = [(MRIProblem(simulate_kspace(truth, mask), mask), truth)]
    # G = 1 and G = 2 oracle priors: every partition predicts its slab of the truth
    models = {G: oracle_models(truth, G) for G in (1, 2)}
    return steps_sweep(models, problems, steps=[2, 4], sampling={"sampler": "ddim", "eta": 1.0},
                       dart_settings=DART, drift_iter=2, n_candidates=2, seed=0), truth


def test_sweep_has_one_row_per_method_g_steps_and_volume(sweep):
    frame, _ = sweep
    assert len(frame) == 3 * 2 * 2
    assert set(frame.method) == {"vanilla", "dart", "drift"}
    assert (frame.seconds > 0).all() and frame.ssim.between(-1, 1).all()
    assert set(frame.steps) == {2, 4} and set(frame.G) == {1, 2}
    if torch.cuda.is_available():  # the sampler works on CUDA: its allocator's peak per device
        assert (frame.peak_mem_mb > 0).all() and set(frame.device) == {"cuda:0"}
    else:  # the CPU has no allocator statistics: memory comes from the benchmark files instead
        assert frame.peak_mem_mb.isna().all()


def test_sweep_with_oracle_priors_recovers_the_volume(sweep):
    frame, _ = sweep
    # with an oracle prior the unconditional sample is the truth already; DART and DRIFT keep it
    assert (frame.ssim > 0.95).all(), frame
    # DRIFT's time includes sampling its pool of two candidates, so it costs more than one sample
    for _, grp in frame.groupby(["G", "steps"]):
        t = grp.set_index("method").seconds
        assert t["drift"] > t["vanilla"]


def test_benchmark_files_give_time_and_memory_per_device(tmp_path):
    paths = {}
    for name, s, rss in (("g1_0", 10.0, 500.0), ("g2_0", 6.0, 300.0), ("g2_1", 7.0, 320.0), ("gen1", 8.0, 700.0),
                         ("gen2", 9.0, 720.0)):
        paths[name] = tmp_path / f"{name}.tsv"
        paths[name].write_text(BENCH.format(s=s, rss=rss))
    assert read_benchmark(paths["g1_0"]) == {"seconds": 10.0, "max_rss_mb": 500.0}
    cost = cost_per_device({1: [paths["g1_0"]], 2: [paths["g2_0"], paths["g2_1"]]},
                           {1: paths["gen1"], 2: paths["gen2"]}, n_generated=4)
    train = cost[cost.stage.str.startswith("train")].set_index("G")
    assert train.loc[2, "max_rss_mb"] == 320.0 and train.loc[2, "seconds"] == 7.0
    sample = cost[cost.stage.str.startswith("sample")].set_index("G")
    assert sample.loc[1, "seconds"] == 2.0 and sample.loc[2, "max_rss_mb"] == 720.0
    assert cost.model_mb.isna().all()  # not measured: NaN, never a made-up figure
    cost = cost_per_device({1: [paths["g1_0"]], 2: [paths["g2_0"], paths["g2_1"]]},
                           {1: paths["gen1"], 2: paths["gen2"]}, n_generated=4,
                           model_mb={1: {"train": 500.0, "sample": 120.0}, 2: {"train": 280.0, "sample": 65.0}})
    by = cost.set_index(["stage", "G"]).model_mb
    assert by["train (one job per partition)", 2] == 280.0 and by["sample (all partitions in one job)", 1] == 120.0
    # a resumed job's benchmark times only its own run: the model file's training time replaces it
    cost = cost_per_device({1: [paths["g1_0"]], 2: [paths["g2_0"], paths["g2_1"]]}, {}, n_generated=4,
                           train_seconds={2: [12.5, None]})
    train = cost.set_index("G")
    assert train.loc[2, "seconds"] == 12.5 and train.loc[1, "seconds"] == 10.0 and train.loc[2, "max_rss_mb"] == 320.0
    with pytest.raises(InputError, match="G=2 needs 2 recorded"):
        cost_per_device({2: [paths["g2_0"], paths["g2_1"]]}, {}, n_generated=4, train_seconds={2: [1.0]})


def test_a_bad_benchmark_file_is_named(tmp_path):
    bad = tmp_path / "bench.tsv"
    bad.write_text("seconds\n3\n")
    with pytest.raises(InputError, match="bench.tsv"):
        read_benchmark(bad)


def test_figure5_frame_and_plot(sweep, tmp_path):
    frame, _ = sweep
    cost = pd.DataFrame([{"stage": "train (one job per partition)", "G": G, "seconds": 5.0 / G,
                          "max_rss_mb": 400.0 / G, "model_mb": 300.0 / G} for G in (1, 2)])
    table = figure5_frame(frame, cost)
    assert set(table.panel) == {"steps", "per device vs G"}
    assert len(table[table.panel == "steps"]) == 3 * 2 * 2
    fig = plot_figure5(table)
    fig.savefig(tmp_path / "figure5.png", dpi=50)
    assert (tmp_path / "figure5.png").stat().st_size > 5_000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_reset_works_before_the_process_first_uses_cuda():
    """The sweep, DART and the 4D-STEM baselines reset the CUDA peak before their first CUDA call;
    in a fresh process torch's bare reset fails there ("Invalid device argument")."""
    import subprocess
    import sys

    code = ("import torch; from physdiff.recon.run import peak_memory_mb, reset_peak_memory; "
            "reset_peak_memory('cuda'); x = torch.ones(2**20, device='cuda'); print(peak_memory_mb('cuda'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) >= 4.0  # the 4 MiB tensor
