"""DART and DRIFT on both modalities: oracle priors, data consistency, scoring without ground truth."""

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from test_stem_baselines import copt3  # noqa: F401  (the tiny abTEM CoPt3 case, a fixture)

from physdiff.data.phantoms import blob_volume
from physdiff.data.transforms import PowerTransform
from physdiff.errors import ConfigError, InputError
from physdiff.metrics.ssim import ssim_phase_projection, ssim_volume
from physdiff.models.diffusion import GaussianDiffusion, to_network
from physdiff.physics.mri import fft2c, simulate_kspace
from physdiff.recon.dart import dart
from physdiff.recon.drift import drift, physics_only
from physdiff.recon.problems import MRIProblem, STEMProblem

DIFF = GaussianDiffusion()


class OraclePrior:
    """Partition model whose eps makes predict_x0 equal the true slab (network scale) at every step."""

    def __init__(self, slab: torch.Tensor):
        self.slab = slab  # (S_g, H, W) in [-1, 1]

    def __call__(self, x, t):
        return DIFF.eps_from_x0(x, int(t[0]), self.slab.to(x.device).expand_as(x))


def oracle_models(volume_unit: np.ndarray, partitions: int):
    x = to_network(torch.as_tensor(volume_unit, dtype=torch.float32))
    s = x.shape[0]
    return [OraclePrior(x[g * s // partitions:(g + 1) * s // partitions]) for g in range(partitions)]


@pytest.fixture(scope="module")
def mri_case():
    truth = blob_volume(8, 32, seed=3)
    mask = np.zeros((32, 32), bool)
    mask[:, ::4] = True
    mask[:, 14:18] = True
    return truth, mask, simulate_kspace(truth, mask)


def test_dart_with_an_oracle_prior_recovers_the_mri_volume(mri_case):
    truth, mask, y = mri_case
    problem = MRIProblem(y, mask)
    result = dart(oracle_models(truth, 2), problem, steps=10, progress=False)
    assert ssim_volume(result.volume, truth) > 0.99
    assert ssim_volume(result.volume, truth) > ssim_volume(problem.naive_start(), truth) + 0.1
    assert len(result.steps) == 11 and result.steps[-1]["t"] == -1


def test_dart_output_keeps_the_measured_kspace_lines(mri_case):
    truth, mask, y = mri_case
    problem = MRIProblem(y, mask)
    # a poor prior (a constant volume) so that the physics step has real work to do
    models = oracle_models(np.full_like(truth, 0.3), 2)
    result = dart(models, problem, steps=5, progress=False)
    k = fft2c(problem.last_complex)
    np.testing.assert_allclose(k[:, mask], y[:, mask], atol=1e-5)
    np.testing.assert_allclose(np.abs(problem.last_complex), result.volume, atol=1e-6)
    assert problem.last_info["residual_after"] < 1e-4


@pytest.mark.parametrize("correction", ["x0", "xt"])
def test_dart_entered_part_way_starts_from_the_zero_filled_image(mri_case, correction):
    truth, mask, y = mri_case
    problem = MRIProblem(y, mask)
    # the oracle prior still recovers the volume when only the last 30 % of the loop is run
    result = dart(oracle_models(truth, 2), problem, steps=10, start=0.3, correction=correction, progress=False)
    assert ssim_volume(result.volume, truth) > 0.99
    # steps 299, 199, 99 of the 10-step schedule lie below 300; x0 corrects at each, xt between them; then the final Phi
    assert [r["t"] for r in result.steps] == ([299, 199, 99, -1] if correction == "x0" else [199, 99, -1])
    k = fft2c(problem.last_complex)
    np.testing.assert_allclose(k[:, mask], y[:, mask], atol=1e-5)
    # with a prior that knows nothing (eps = 0: x0 is x_t rescaled), a late start keeps the zero-filled
    # image's content, which a run from pure noise cannot
    null = [lambda x, t: torch.zeros_like(x)] * 2
    naive = problem.naive_start()
    late = dart(null, problem, steps=50, start=0.05, eta=0.0, progress=False).volume
    full = dart(null, problem, steps=50, eta=0.0, progress=False).volume
    assert ssim_volume(late, truth) > ssim_volume(full, truth) + 0.1
    assert ssim_volume(late, naive) > 0.5
    with pytest.raises(ConfigError, match="start"):
        dart(null, problem, steps=5, start=1.5, progress=False)


def test_dart_rejects_an_unknown_correction(mri_case):
    truth, mask, y = mri_case
    with pytest.raises(ConfigError, match="correction"):
        dart(oracle_models(truth, 1), MRIProblem(y, mask), correction="both", progress=False)
    with pytest.raises(ConfigError, match="recon.dart.seam"):
        dart(oracle_models(truth, 2), MRIProblem(y, mask), seam="blend", progress=False)


def test_dart_seam_overlap_changes_the_boundary_slices_and_keeps_the_measured_lines(mri_case):
    truth, mask, y = mri_case
    models = oracle_models(truth, 2)
    runs = {}
    for seam in ("none", "overlap"):
        problem = MRIProblem(y, mask)
        runs[seam] = dart(models, problem, steps=5, seam=seam, seed=1, progress=False).volume
        np.testing.assert_allclose(fft2c(problem.last_complex)[:, mask], y[:, mask], atol=1e-5)
    change = np.abs(runs["overlap"] - runs["none"]).mean(axis=(1, 2))
    # the blended window of slab length spans slices 2..5 around the boundary at 4; the outer slices keep their eps
    assert change[3:5].min() > 10 * max(change[0], change[-1])


@pytest.mark.slow
def test_dart_with_an_oracle_prior_recovers_the_potential(copt3):  # noqa: F811
    geometry, truth, intensities, _ = copt3
    transform = PowerTransform(float(truth.max()) * 1.05, gamma=0.5)
    problem = STEMProblem(intensities, geometry, transform, device="cpu")
    unit = transform.encode(truth.numpy())
    result = dart(oracle_models(unit, 2), problem, steps=4, progress=False)
    sigma = geometry.sigma
    assert ssim_phase_projection(result.volume, truth.numpy(), sigma) > 0.95
    assert ssim_phase_projection(result.volume, truth.numpy(), sigma) > \
        ssim_phase_projection(problem.naive_start(), truth.numpy(), sigma) + 0.5


def test_dart_step_lowers_the_multislice_loss(copt3):  # noqa: F811
    geometry, truth, intensities, _ = copt3
    problem = STEMProblem(intensities, geometry, PowerTransform(float(truth.max())), device="cpu")
    x0 = 0.5 * truth + 20.0 * torch.rand(truth.shape, generator=torch.Generator().manual_seed(0))
    before = problem.loss(x0)
    after = problem.loss(problem.data_step(x0))
    assert after < before
    assert problem.last_info["loss_after"] < problem.last_info["loss_before"]
    assert problem.eta is not None  # warm-started for the next reverse step


def test_dart_runs_on_one_stem_problem_do_not_share_a_step_size(copt3):  # noqa: F811
    # tune_dart scores every grid point on the same problems: a step size warm-started by the
    # previous run would make a setting's score depend on the grid's order
    geometry, truth, intensities, _ = copt3
    transform = PowerTransform(float(truth.max()) * 1.05, gamma=0.5)
    problem = STEMProblem(intensities, geometry, transform, device="cpu")
    dart(oracle_models(transform.encode(truth.numpy()), 2), problem, steps=5, progress=False)
    assert problem.eta is not None  # what that run left: without the reset the next run differs by ~100 V·Å
    models = oracle_models(transform.encode(0.5 * truth.numpy()), 2)
    again = dart(models, problem, steps=3, progress=False)
    fresh = dart(models, STEMProblem(intensities, geometry, transform, device="cpu"), steps=3, progress=False)
    np.testing.assert_array_equal(again.volume, fresh.volume)


def test_drift_picks_the_best_scoring_candidate_without_ground_truth(mri_case):
    truth, mask, y = mri_case
    problem = MRIProblem(y, mask, solver="projection", solver_params={"wavelet_thresh": 0.0})
    rng = np.random.default_rng(0)
    candidates = np.stack([rng.random(truth.shape, np.float32), truth, np.zeros_like(truth) + 0.2])
    result = drift(candidates, problem, n_iter=0, progress=False)
    # every score is the SSIM of zero-filled images, with the measurement's data range
    observed = np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(y, axes=(-2, -1)), norm="ortho"),
                                      axes=(-2, -1)))
    rng_obs = observed.max() - observed.min()
    for cand, score in zip(candidates, result.scores):
        image = problem.simulate_observed(cand)
        expected = np.mean([structural_similarity(a, b, data_range=rng_obs) for a, b in zip(image, observed)])
        assert score == pytest.approx(expected, abs=1e-6)
    assert result.best == int(np.argmax(result.scores)) == 1
    np.testing.assert_array_equal(result.volume, candidates[1])


def test_drift_beats_its_physics_only_twin_from_a_good_candidate(mri_case):
    truth, mask, y = mri_case
    problem = MRIProblem(y, mask, solver="projection", solver_params={"wavelet_thresh": 0.01})
    near = np.clip(truth + 0.05 * np.random.default_rng(1).standard_normal(truth.shape), 0, 1).astype(np.float32)
    refined = drift(near[None], problem, n_iter=5, progress=False)
    twin = physics_only(problem, n_iter=5)
    assert ssim_volume(refined.volume, truth) > ssim_volume(twin.volume, truth)


class RankedProblem:
    """A stand-in problem for DRIFT's selection logic: each candidate's score is set by hand, the
    solver moves a start towards the truth (K = 4 best, artefacts beyond), and the data loss is
    the squared distance to the truth. Counts every solve."""

    transform = None

    def __init__(self, truth: np.ndarray, candidates: np.ndarray, scores):
        self.truth, self.shape = truth, truth.shape
        self._scores = {c.tobytes(): s for c, s in zip(candidates, scores)}
        self.artefact = np.random.default_rng(9).standard_normal(truth.shape).astype(np.float32)
        self.solves: dict[tuple[bytes, int], int] = {}

    def score(self, v):
        return self._scores[np.asarray(v, np.float32).tobytes()]

    def solve(self, start, n_iter):
        key = (np.asarray(start, np.float32).tobytes(), n_iter)
        self.solves[key] = self.solves.get(key, 0) + 1
        blend = 0.5 * min(n_iter, 4) / 4
        return (start + blend * (self.truth - start) + 0.05 * max(0, n_iter - 4) * self.artefact).astype(np.float32)

    def loss(self, v):
        return float(((np.asarray(v) - self.truth) ** 2).sum())


@pytest.fixture
def ranked_case():
    """Four candidates, best score first, whose distance to the truth is 0.8, 0.6, 0.1, 0.5."""
    truth = blob_volume(2, 16, seed=5)
    noise = np.random.default_rng(4).standard_normal((4, *truth.shape)).astype(np.float32)
    candidates = (truth + np.array([0.8, 0.6, 0.1, 0.5], np.float32)[:, None, None, None] * noise).astype(np.float32)
    return truth, candidates, RankedProblem(truth, candidates, [0.9, 0.8, 0.7, 0.6])


def test_drift_refines_the_best_scored_and_keeps_the_lowest_data_loss(ranked_case):
    truth, candidates, problem = ranked_case
    paper = drift(candidates, problem, n_iter=4, progress=False)
    assert paper.best == 0 and paper.refined == [0] and len(paper.losses) == 1
    two = drift(candidates, problem, n_iter=4, refine_top=2, progress=False)
    assert two.refined == [0, 1] and two.best == 1  # candidate 2 fits best but was not refined
    assert two.losses[1] == pytest.approx(problem.loss(two.volume)) and two.losses[1] < two.losses[0]
    # the refined volumes are kept, best score first: the first is the paper's pick, refined
    np.testing.assert_array_equal(two.refined_volumes[0], paper.volume)
    np.testing.assert_array_equal(two.refined_volumes[1], two.volume)
    three = drift(candidates, problem, n_iter=4, refine_top=3, progress=False)
    assert three.best == 2 and ssim_volume(three.volume, truth) > ssim_volume(two.volume, truth)
    everything = drift(candidates, problem, n_iter=0, refine_top=10, progress=False)  # M > N refines all N
    assert everything.refined == [0, 1, 2, 3] and everything.best == 2
    np.testing.assert_array_equal(everything.volume, candidates[2])
    with pytest.raises(ConfigError, match="refine_top"):
        drift(candidates, problem, n_iter=1, refine_top=0, progress=False)


def test_tune_drift_chooses_k_and_the_refined_count_inside_what_it_tried(ranked_case):
    from physdiff.recon.run_prior import tune_drift

    truth, candidates, problem = ranked_case
    problems = [(problem, truth, None)]
    # M = 2 wins at every K, so M doubles to 4, where M = 3 (candidate 2) wins; K = 4 is inside 2..8
    result = tune_drift(candidates, problems, modality="mri", grid=[2, 4, 8], refine_top=2)
    assert (result["n_iter"], result["refine_top"]) == (4, 3)
    assert not result["on_edge"] and not result["refine_on_edge"]
    table = {(r["n_iter"], r["refine_top"]): r["score"] for r in result["table"]}
    assert result["score"] == max(table.values()) == table[4, 3] == table[4, 4]  # a tie goes to fewer refined
    assert table[4, 2] > table[4, 1]
    assert max(problem.solves.values()) == 1  # each (candidate, K) solved once
    # refine_top = 1 keeps the paper's pick by score and does not search M
    paper = tune_drift(candidates, problems, modality="mri", grid=[2, 4, 8], refine_top=1)
    assert paper["refine_top"] == 1 and {r["refine_top"] for r in paper["table"]} == {1}
    assert paper["score"] < result["score"]


def test_mri_problem_loss_is_the_squared_residual_of_the_measured_lines(mri_case):
    truth, mask, y = mri_case
    problem = MRIProblem(y, mask)
    guess = np.clip(truth + 0.1, 0, 1).astype(np.float32)
    # reference with numpy's FFT: the centred orthonormal transform on the sampled lines
    kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(guess, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    expected = float((np.abs((kspace - y) * mask) ** 2).sum())
    assert problem.loss(guess) == pytest.approx(expected, rel=1e-4)
    assert problem.loss(truth) < 1e-3 * expected


def test_drift_rejects_candidates_of_the_wrong_shape(mri_case):
    truth, mask, y = mri_case
    with pytest.raises(InputError, match="candidates"):
        drift(np.zeros((2, 4, 32, 32), np.float32), MRIProblem(y, mask), n_iter=1, progress=False)


def test_stem_drift_scores_bright_fields(copt3):  # noqa: F811
    geometry, truth, intensities, _ = copt3
    problem = STEMProblem(intensities, geometry, PowerTransform(float(truth.max())), device="cpu")
    candidates = np.stack([np.zeros_like(truth.numpy()), truth.numpy(), 0.5 * truth.numpy()[::-1].copy()])
    result = drift(candidates, problem, n_iter=0, progress=False)
    assert result.best == 1 and result.scores[1] == pytest.approx(1.0, abs=1e-4)


def test_a_partition_model_of_the_wrong_shape_stops_naming_the_file(tmp_path):
    from physdiff.models.train import save_model, train_prior
    from physdiff.recon.run_prior import load_partition_models

    cfg = {"dim": 8, "dim_mults": [1, 2], "attn_resolutions": [], "temporal_attn_resolutions": [], "head_dim": 8,
           "image_size": 16}
    data = np.random.default_rng(0).random((4, 2, 16, 16), np.float32)
    path = tmp_path / "g0" / "model.pt"
    save_model(path, train_prior(data, model_cfg=cfg, steps=1, batch_size=2, grad_accum=1, progress=False))
    assert len(load_partition_models([path], slices=4, size=(16, 16))) == 1
    with pytest.raises(InputError, match=r"g0/model.pt.*16 x 16.*32 x 32"):
        load_partition_models([path], slices=4, size=(32, 32))
    with pytest.raises(InputError, match="cannot split"):
        load_partition_models([path, path, path], slices=2)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="model.pt"):
        load_partition_models([path])


def test_validation_problems_measure_the_volumes_as_tune_dart_does(tmp_path):
    # what benchmarks/ read from a finished run must be the problems the tuning rules saw
    from pathlib import Path

    from physdiff.config import load_config, mri_problem_config
    from physdiff.recon.run_prior import mri_problem, validation_problems
    from physdiff.results import Layout

    cfg = load_config(Path(__file__).resolve().parents[1] / "config/config.yaml")
    cfg["recon"]["mri"]["noise_std"] = 0.01  # the default measures without noise, where seeds do not show
    mask_name = cfg["recon"]["dart"]["mri_tune_mask"]
    with pytest.raises(InputError, match="val.npy: missing"):
        validation_problems(tmp_path, cfg, "mri", 2, solver_tuning=False)
    volumes = np.stack([blob_volume(4, 16, seed=s) for s in range(3)])
    mask = np.zeros((16, 16), bool)
    mask[:, ::3] = True
    lay = Layout(tmp_path)
    for path, array in ((lay.mri_split("val"), volumes), (lay.mri_mask(mask_name), mask)):
        path.parent.mkdir(parents=True)
        np.save(path, array)
    problems = validation_problems(tmp_path, cfg, "mri", 2, solver_tuning=False)
    assert len(problems) == 2
    pc = mri_problem_config(cfg)
    for i, (problem, truth, sigma) in enumerate(problems):
        assert sigma is None and np.array_equal(truth, volumes[i])
        # validation volumes are measured with the seeds tune_dart uses, never the test seeds
        expected = mri_problem(volumes[i], mask, noise_std=pc["noise_std"], seed=pc["seed"] + 100_000 + i)
        np.testing.assert_array_equal(problem.y, expected.y)
        assert not np.array_equal(problem.y, mri_problem(volumes[i], mask, noise_std=pc["noise_std"],
                                                         seed=pc["seed"] + i).y)
    with pytest.raises(ConfigError, match="modality"):
        validation_problems(tmp_path, cfg, "ct")


def test_on_a_periodic_scan_a_shifted_potential_rolls_its_bright_field(copt3):  # noqa: F811
    # the premise of STEMProblem.align, checked against the multislice model itself
    geometry, truth, intensities, _ = copt3
    problem = STEMProblem(intensities, geometry, PowerTransform(float(truth.max())), device="cpu")
    assert problem.periodic_scan()  # 12 positions of 4 pixels tile the 48-pixel cell
    v = truth.numpy()
    rolled = problem.simulate_observed(np.roll(v, (4, 8), axis=(1, 2)))
    np.testing.assert_allclose(rolled, np.roll(problem.observed(), (1, 2), axis=(0, 1)), rtol=1e-4, atol=1e-6)


def test_stem_drift_score_does_not_depend_on_the_scan_batch(copt3):  # noqa: F811
    # DRIFT scores with the problem's batch of scan positions (a GPU wants the whole scan at once)
    geometry, truth, intensities, _ = copt3
    v = 0.8 * truth.numpy()
    small, whole = (STEMProblem(intensities, geometry, PowerTransform(float(truth.max())), device="cpu",
                                batch_size=b) for b in (5, 10_000))
    np.testing.assert_allclose(small.simulate_observed(v), whole.simulate_observed(v), rtol=1e-5, atol=1e-7)
    assert small.score(v) == pytest.approx(whole.score(v), abs=1e-6)


def test_stem_drift_finds_the_lateral_shift_of_a_displaced_candidate(copt3):  # noqa: F811
    from physdiff.recon.problems import shift_periodic

    geometry, truth, intensities, _ = copt3
    v = truth.numpy()
    # 2 and 3 scan steps (8 and 12 pixels): whole pixels; 1.5 steps: a Fourier shift by 6 pixels is whole too,
    # so also move by 2.5 pixels off the scan grid and expect the nearest grid shift back
    displaced = np.stack([np.roll(v, (8, 12), axis=(1, 2)), shift_periodic(v, (-2.5, 0.0), nonnegative=True)])
    plain = STEMProblem(intensities, geometry, PowerTransform(float(truth.max())), device="cpu")
    aligned = STEMProblem(intensities, geometry, PowerTransform(float(truth.max())), device="cpu", align_candidates=True)
    before = drift(displaced, plain, n_iter=0, progress=False)
    after = drift(displaced, aligned, n_iter=0, progress=False)
    assert after.best == 0 and after.scores[0] == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_array_equal(after.volume, v)
    assert max(before.scores) < 0.9
    assert after.scores[1] > before.scores[1]  # half a pixel off: better than 2.5 pixels, not exact
    # sub-pixel shifts interpolate (lossy near Nyquist for these sharp columns) and keep the mean
    moved = shift_periodic(v, (1.5, -0.25))
    np.testing.assert_allclose(moved.mean(axis=(1, 2)), v.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(shift_periodic(moved, (-1.5, 0.25)), v, atol=0.05 * v.max())


def test_drift_tuning_file_gives_k_and_m_and_names_a_bad_file(tmp_path):
    from physdiff.recon.run_prior import load_drift_tuning

    path = tmp_path / "drift.json"
    path.write_text('{"n_iter": 10, "refine_top": 4}')
    assert load_drift_tuning(path) == (10, 4)
    path.write_text('{"n_iter": 7}')  # written before M was tuned: the pick by score alone
    assert load_drift_tuning(path) == (7, 1)
    path.write_text('{"refine_top": 4}')
    with pytest.raises(InputError, match="drift.json.*n_iter"):
        load_drift_tuning(path)
