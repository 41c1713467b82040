"""FVD, JEDi and bootstrap intervals (Table 3) against closed forms and scikit-learn."""

import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import polynomial_kernel as sk_polynomial_kernel

from physdiff.errors import ConfigError, InputError
from physdiff.metrics.fvd import (
    bootstrap_ci,
    feature_extractor_from_config,
    frechet_distance,
    jedi,
    score,
)
from physdiff.metrics.table3 import load_volumes, table3_frame, write_table3


def exact_samples(mean, cov, n, seed):
    """n samples whose sample mean and (ddof=1) covariance are exactly `mean` and `cov`."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(0)
    # whiten so the sample covariance is I, then colour with a square root of cov
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return mean + z @ np.linalg.cholesky(cov).T


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5, 3.0]), np.array([4.0, 0.5, 0.5, 1.0])
    x, y = exact_samples(mu1, np.diag(s1), 200, 0), exact_samples(mu2, np.diag(s2), 300, 1)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_matches_symmetrised_form_for_full_covariances():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    c1, c2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    # tr (C1 C2)^(1/2) = tr (C1^(1/2) C2 C1^(1/2))^(1/2), which eigh computes from symmetric matrices
    w, v = np.linalg.eigh(c1)
    r1 = v @ np.diag(np.sqrt(w)) @ v.T
    tr_sqrt = np.sum(np.sqrt(np.linalg.eigvalsh(r1 @ c2 @ r1)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt
    x, y = exact_samples(mu1, c1, 100, 3), exact_samples(mu2, c2, 100, 4)
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_survives_singular_covariances():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((10, 64))  # N < D: rank-deficient covariance
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-10 * 2 * np.trace(np.cov(x, rowvar=False)))
    d = frechet_distance(x, rng.standard_normal((12, 64)) + 1.0)
    assert np.isfinite(d) and d > 64 * 0.5  # the mean shift alone contributes 64


@pytest.mark.parametrize("n, m, d", [(8, 6, 40), (30, 25, 10), (9, 9, 9)])
def test_frechet_distance_equals_scipy_sqrtm_of_the_covariance_product(n, m, d):
    import scipy.linalg

    rng = np.random.default_rng(n + m + d)
    x, y = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)), rng.standard_normal((m, d)) + 0.5
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    diff = x.mean(0) - y.mean(0)
    expected = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(scipy.linalg.sqrtm(s1 @ s2)))
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-6, abs=1e-8 * (np.trace(s1) + np.trace(s2)))


def test_jedi_is_100_times_biased_mmd2_with_sklearn_polynomial_kernel():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((30, 16)), 0.5 + 1.3 * rng.standard_normal((40, 16))

    def k(a, b):
        return sk_polynomial_kernel(a, b, degree=2, gamma=1.0 / 16, coef0=0)

    expected = 100 * (k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
    assert jedi(x, y) == pytest.approx(expected, rel=1e-10)
    assert jedi(x, x) == pytest.approx(0.0, abs=1e-10)
    assert jedi(x, y) > 1.0


def test_bootstrap_ci_width_matches_standard_error_of_a_mean_difference():
    rng = np.random.default_rng(7)
    n = 400
    real, gen = rng.standard_normal((n, 1)), 0.5 + rng.standard_normal((n, 1))

    def mean_diff(a, b):
        return float(b.mean() - a.mean())

    lo, hi = bootstrap_ci(mean_diff, real, gen, n_boot=1000, seed=0)
    assert lo < mean_diff(real, gen) < hi
    assert hi - lo == pytest.approx(2 * 1.96 * np.sqrt(2 / n), rel=0.15)
    assert bootstrap_ci(mean_diff, real, gen, n_boot=50, seed=3) == bootstrap_ci(
        mean_diff, real, gen, n_boot=50, seed=3
    )


@pytest.mark.parametrize("metric", [frechet_distance, jedi])
def test_bootstrap_ci_is_corrected_for_the_resampling_bias(metric):
    # duplicates from resampling inflate FD and biased MMD; uncorrected, the interval misses
    rng = np.random.default_rng(12)
    x, y = rng.standard_normal((50, 64)) + 1, 1.1 * rng.standard_normal((50, 64)) + 1.1
    value = metric(x, y)
    plain_lo, _ = bootstrap_ci(metric, x, y, n_boot=40, seed=0, bias_correct=False)
    lo, hi = bootstrap_ci(metric, x, y, n_boot=40, seed=0)
    assert plain_lo > value
    assert lo < value < hi


def test_score_reports_both_set_sizes():
    rng = np.random.default_rng(8)
    s = score(frechet_distance, rng.standard_normal((20, 3)), rng.standard_normal((25, 3)), n_boot=20)
    assert (s.n_real, s.n_gen) == (20, 25)
    assert "N=25 vs 20" in str(s)


def test_metrics_reject_bad_features():
    with pytest.raises(InputError, match="generated features: features hold NaN"):
        frechet_distance(np.zeros((3, 2)), np.full((3, 2), np.nan))
    with pytest.raises(InputError, match="feature dimensions differ"):
        jedi(np.zeros((3, 2)), np.zeros((3, 4)))


def test_unconfigured_feature_networks_say_which_key_to_set(tmp_path):
    assert feature_extractor_from_config({}, "videomae") == "not configured (set metrics.videomae_checkpoint)"
    assert feature_extractor_from_config({"metrics": {}}, "vjepa") == "not configured (set metrics.vjepa_checkpoint)"
    assert feature_extractor_from_config({}, "i3d") == "not configured (set metrics.i3d_checkpoint)"
    with pytest.raises(InputError, match="metrics.videomae_checkpoint: .*absent.pt does not exist"):
        feature_extractor_from_config({"metrics": {"videomae_checkpoint": str(tmp_path / "absent.pt")}}, "videomae")


class _MeanPerChannel(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3, 4))


@pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:DeprecationWarning")
def test_torchscript_feature_network_loads_from_config(tmp_path):
    path = tmp_path / "videomae.pt"
    torch.jit.script(_MeanPerChannel()).save(str(path))
    extract = feature_extractor_from_config({"metrics": {"videomae_checkpoint": str(path)}}, "videomae")
    vols = np.stack([np.full((8, 6, 6), 0.25), np.full((8, 6, 6), 1.0)])
    assert np.allclose(extract(vols), [[-0.5] * 3, [1.0] * 3])  # [0, 1] -> [-1, 1]
    junk = tmp_path / "junk.pt"
    junk.write_text("no")
    with pytest.raises(InputError, match="junk.pt is not a TorchScript/.pt2 file"):
        feature_extractor_from_config({"metrics": {"vjepa_checkpoint": str(junk)}}, "vjepa")


def test_exported_program_feature_network_loads_from_config(tmp_path):
    path = tmp_path / "vjepa.pt2"
    torch.export.save(torch.export.export(_MeanPerChannel(), (torch.zeros(2, 3, 16, 224, 224),)), str(path))
    extract = feature_extractor_from_config({"metrics": {"vjepa_checkpoint": str(path), "batch_size": 2}}, "vjepa")
    vols = np.stack([np.full((8, 6, 6), 0.0), np.full((8, 6, 6), 0.5)])
    assert np.allclose(extract(vols), [[-1.0] * 3, [0.0] * 3])


def _slice_means(volumes):
    """Cheap stand-in feature network: the mean of each slice, (N, S)."""
    return np.asarray(volumes).mean(axis=(2, 3))


def test_table3_scores_each_setting_and_count_and_names_missing_networks(tmp_path):
    rng = np.random.default_rng(10)
    real = rng.uniform(size=(6, 4, 5, 5))
    generated = {1: rng.uniform(size=(8, 4, 5, 5)), 2: 0.5 * rng.uniform(size=(8, 4, 5, 5))}
    extractors = {"i3d": _slice_means, "videomae": "not configured (set metrics.videomae_checkpoint)",
                  "vjepa": "not configured (set metrics.vjepa_checkpoint)"}
    frame = table3_frame(real, generated, [4, 8], extractors, n_boot=20, seed=0)
    assert len(frame) == 1 + 2 * 2 * 5  # the real volumes' seam ratio, then 2 sets x 2 counts x 5 columns
    fvd = frame[(frame.metric == "FVD-i3D") & (frame.G == 2) & (frame["count"] == 8)].iloc[0]
    assert fvd.value == pytest.approx(frechet_distance(_slice_means(real), _slice_means(generated[2])))
    assert (fvd.n_real, fvd.n_gen) == (6, 8) and fvd.ci_lo <= fvd.ci_hi
    # the darker G=2 set is further from the real one than the G=1 set
    g1 = frame[(frame.metric == "FVD-i3D") & (frame.G == 1) & (frame["count"] == 8)].iloc[0]
    assert fvd.value > g1.value
    missing = frame[frame.metric == "FVD-VideoMAE"]
    assert missing.value.isna().all() and (missing.status == extractors["videomae"]).all()
    write_table3(frame, tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.tex")
    md = (tmp_path / "t.md").read_text()
    assert "| 2 partition models, slabs stacked | 8 | 6 |" in md
    assert "not configured (set metrics.vjepa_checkpoint)" in md
    assert r"not configured (set metrics.vjepa\_checkpoint)" in (tmp_path / "t.tex").read_text()


def test_table3_seam_ratio_tells_a_seamed_stack_from_a_smooth_one(tmp_path):
    # smooth volumes: every slice a small step from the last; the "plain" stack jumps at slice 4
    rng = np.random.default_rng(12)
    base = rng.uniform(size=(6, 1, 5, 5))
    ramp = np.linspace(0.0, 0.1, 8)[None, :, None, None]
    real, blended = base + ramp, base[::-1] + ramp
    plain = blended.copy()
    plain[:, 4:] += 0.5
    frame = table3_frame(real, {1: real[::-1].copy(), (2, "overlap"): blended, (2, "none"): plain}, [6],
                         {"i3d": _slice_means}, n_boot=20, seed=0)
    seam = frame[frame.metric == "seam ratio"].set_index("setting")
    assert seam.loc["real (held out)", "value"] == pytest.approx(1.0)
    assert seam.loc["2 partition models, overlapping seams, triangle window (ours)", "value"] == pytest.approx(1.0)
    assert seam.loc["2 partition models, slabs stacked", "value"] > 10
    plain_row = seam.loc["2 partition models, slabs stacked"]
    assert plain_row.ci_lo <= plain_row.value <= plain_row.ci_hi
    write_table3(frame, tmp_path / "t.csv", tmp_path / "t.md", tmp_path / "t.tex")
    md = (tmp_path / "t.md").read_text()
    assert "| real (held out) | 6 | 6 | - | - |" in md and "seam ratio |" in md


def test_table3_refuses_counts_beyond_the_generated_volumes():
    rng = np.random.default_rng(11)
    real, gen = rng.uniform(size=(4, 3, 4, 4)), {1: rng.uniform(size=(5, 3, 4, 4))}
    with pytest.raises(ConfigError, match="metrics.table3_counts: 6 volumes asked for, G=1 has 5"):
        table3_frame(real, gen, [6], {"i3d": _slice_means}, n_boot=2)
    with pytest.raises(InputError, match="generated G=1 volumes are"):
        table3_frame(real, {1: rng.uniform(size=(5, 2, 4, 4))}, [2], {"i3d": _slice_means}, n_boot=2)


def test_load_volumes_names_the_file(tmp_path):
    path = tmp_path / "G1.npy"
    np.save(path, np.zeros((3, 4)))
    with pytest.raises(InputError, match=r"G1.npy: expected \(N, S, H, W\)"):
        load_volumes(path)
    with pytest.raises(InputError, match="absent.npy: cannot read"):
        load_volumes(tmp_path / "absent.npy")
