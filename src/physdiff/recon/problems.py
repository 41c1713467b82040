"""The physics of one measurement, as DART and DRIFT see it: a data step, a score, a naive start.

DART and DRIFT (`physdiff.recon.dart`, `physdiff.recon.drift`) take a problem object and never
ask which modality it is. A problem exposes, in data units (MRI magnitudes in [0, 1]; 4D-STEM
potentials in V·Å):

- `shape`: (S, H, W) of the volume;
- `transform`: the map between data units and the prior's [0, 1] (`physdiff.data.transforms`);
- `data_step(x)`: the physics step Phi that DART applies to the stacked x0 (torch in, torch out),
  with `last_info` holding what it did;
- `finalize(x)`: Phi once more at the end; returns the reconstruction to score (numpy);
- `observed()` and `simulate_observed(x)`: what the measurement shows directly (MRI: the
  zero-filled image; 4D-STEM: the bright-field image) and the same image for a candidate
  volume; `score(x)` is their SSIM, with `data_range` from the measurement, never from a
  ground truth;
- `naive_start()`: the guess a physics-only solver starts from (zero-filled image; V = 0);
- `reset()`: forget what earlier reconstructions left behind (4D-STEM: the warm-started step
  size), so every DART run on a problem starts as a fresh one would;
- `solve(start, n_iter)`: the physics solver DRIFT runs from its chosen candidate.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from skimage.metrics import structural_similarity

from physdiff.data.transforms import IdentityTransform, PowerTransform
from physdiff.errors import ConfigError, InputError
from physdiff.physics.mri import MRIForward, check_mask, data_consistency, fft2c, ifft2c, zero_filled
from physdiff.physics.multislice import MultisliceGeometry, MultisliceModel
from physdiff.physics.stem_loss import data_loss, loss_and_grad, physics_step
from physdiff.recon.mri_baselines import MRI_BASELINES
from physdiff.recon.stem_baselines import sparse_decomposition, three_pie, torchslice

STEM_SOLVERS = {"sparse_decomposition": sparse_decomposition, "torchslice": torchslice, "three_pie": three_pie}


def shift_periodic(v: np.ndarray, shift: tuple[float, float], *, nonnegative: bool = False) -> np.ndarray:
    """v (..., H, W) moved by `shift` pixels along (H, W) with periodic wrap-around: np.roll for
    whole pixels, a Fourier shift otherwise (then clipped at 0 if `nonnegative`)."""
    v = np.asarray(v, np.float32)
    if all(float(s).is_integer() for s in shift):
        return np.roll(v, tuple(int(s) for s in shift), axis=(-2, -1))
    phase = 1.0
    for axis, s in zip((-2, -1), shift):
        n = v.shape[axis]
        factor = np.exp(-2j * np.pi * np.fft.fftfreq(n) * s)
        if n % 2 == 0:  # the Nyquist bin stands for +-1/2 alike: its real, symmetric factor
            factor[n // 2] = np.cos(np.pi * s)
        phase = phase * (factor[:, None] if axis == -2 else factor[None, :])
    out = np.fft.ifft2(np.fft.fft2(v) * phase).real.astype(np.float32)
    return np.maximum(out, 0) if nonnegative else out


def _ssim_against(image: np.ndarray, observed: np.ndarray) -> float:
    """Mean 2D SSIM of `image` against `observed` ((S, H, W) or (H, W)), range from `observed`."""
    image, observed = np.asarray(image, np.float64), np.asarray(observed, np.float64)
    if image.shape != observed.shape:
        raise InputError(f"score: candidate image {image.shape} does not match the measurement's {observed.shape}")
    rng = float(observed.max() - observed.min())
    if not rng > 0:
        raise InputError("score: the measurement's own image is constant, so SSIM is undefined")
    if observed.ndim == 2:  # one image (the bright field)
        image, observed = image[None], observed[None]
    return float(np.mean([structural_similarity(a, b, data_range=rng) for a, b in zip(image, observed)]))


class MRIProblem:
    """Single-coil Cartesian MRI: y = M ⊙ F x (docs/method.md, "MRI"); Phi is Eq. (4) on the magnitude."""

    transform = IdentityTransform()

    def __init__(self, y: Any, mask: Any, *, lam: float = 1.0, solver: str = "projection",
                 solver_params: dict | None = None):
        y = np.asarray(y)
        if y.ndim != 3 or not np.iscomplexobj(y):
            raise InputError(f"MRI measurement: expected complex k-space (S, H, W), got {y.dtype} {y.shape}")
        if not np.all(np.isfinite(y)):
            raise InputError("MRI measurement: k-space holds NaN or infinite values")
        if solver not in MRI_BASELINES or solver == "zero_filled":
            raise ConfigError(f"recon.drift.mri_solver: expected one of cs_l1_wavelet, tv, projection, got {solver!r}")
        self.y, self.mask = y.astype(np.complex64), check_mask(mask, y.shape)
        self.lam, self.solver, self.solver_params = float(lam), solver, dict(solver_params or {})
        self.shape = tuple(y.shape)
        self.op = MRIForward(self.mask)
        self._observed = zero_filled(self.y, self.mask).astype(np.float32)
        self._y_torch: dict[torch.device, torch.Tensor] = {}
        self.last_info: dict = {}
        self.last_complex: np.ndarray | None = None

    def _y_on(self, device: torch.device) -> torch.Tensor:
        if device not in self._y_torch:
            self._y_torch[device] = torch.from_numpy(self.y).to(device)
        return self._y_torch[device]

    def reset(self) -> None:
        """Nothing carries over between MRI reconstructions but the last step's log."""
        self.last_info = {}

    def residual(self, x: torch.Tensor) -> float:
        """||M ⊙ F x - M ⊙ y|| of an image x (S, H, W)."""
        return float((self.op.A(x.to(torch.complex64)) - self._y_on(x.device) * self._mask_on(x.device)).norm())

    def loss(self, x: Any) -> float:
        """The data term ||M ⊙ F x - M ⊙ y||^2 of an image x (S, H, W), as DRIFT compares refined starts."""
        return self.residual(torch.as_tensor(np.asarray(x, np.float32))) ** 2

    def _mask_on(self, device: torch.device) -> torch.Tensor:
        return self.op._mask_like(self._y_on(device), "k-space y")

    def _consistent(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. (4) on x (S, H, W), complex: F^-1[F x - lam M ⊙ (F x - y)]; records the residuals."""
        before = self.residual(x)
        out = data_consistency(x.to(torch.complex64), self._y_on(x.device), self.mask, self.lam)
        self.last_info = {"residual_before": before, "residual_after": self.residual(out)}
        return out

    def data_step(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. (4) on x (S, H, W), then the magnitude: x <- |F^-1[F x - lam M ⊙ (F x - y)]|."""
        return self._consistent(x).abs().to(x.dtype)

    def finalize(self, x: torch.Tensor) -> np.ndarray:
        """Phi once more; the complex result is kept in `last_complex`, its magnitude is returned."""
        self.last_complex = self._consistent(x).cpu().numpy()
        return np.abs(self.last_complex).astype(np.float32)

    def fit_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The adaptation loss of an image x (S, H, W), differentiable:
        ||M ⊙ F x - M ⊙ y||^2 / ||M ⊙ y||^2 (the data-consistency error, relative)."""
        y = self._y_on(x.device)
        m = self._mask_on(x.device)
        k = self.op.A(x.to(torch.complex64))
        return ((k - m * y).abs() ** 2).sum() / ((m * y).abs() ** 2).sum().clamp_min(1e-30)

    def centre_fraction(self) -> float:
        """The fraction of the lines in the contiguous sampled run around k = 0 (the mask's centre
        band, with any drawn lines that happen to touch it)."""
        lines = np.asarray(self.mask, bool).reshape(-1, *self.mask.shape[-2:]).any(axis=1).all(axis=0)
        w, mid = lines.size, lines.size // 2
        lo, hi = mid, mid
        while lo > 0 and lines[lo - 1]:
            lo -= 1
        while hi < w and lines[hi]:
            hi += 1
        return (hi - lo) / w

    def split_lines(self, fraction: float, *, seed: int) -> tuple["MRIProblem", np.ndarray]:
        """(the problem of the kept lines, the held-out mask): a seeded `fraction` of the measured
        lines outside the centre band (`physdiff.data.masks.holdout_lines`) is taken out."""
        from physdiff.data.masks import holdout_lines

        center_fraction = self.centre_fraction()
        kept, held = holdout_lines(np.broadcast_to(self.mask, self.shape) if self.mask.ndim == 2 else self.mask,
                                   fraction, center_fraction=center_fraction, seed=seed)
        sub = MRIProblem(self.y * kept, kept, lam=self.lam, solver=self.solver, solver_params=self.solver_params)
        return sub, held

    split_measurement = split_lines  # the held-out split that DART's adaptation asks any problem for

    def heldout_error(self, x: Any, held: np.ndarray) -> float:
        """Relative error of x (S, H, W) on the `held` lines of this measurement (`select.heldout_error`)."""
        from physdiff.recon.select import heldout_error

        return heldout_error(np.asarray(x, np.float32), self.y, held)

    def noised_consistency(self, x_net: torch.Tensor, abar: float, noise: torch.Tensor) -> torch.Tensor:
        """Data consistency on x_{t-1} as the diffusion model sees it (ours; score-based MRI solvers).

        x_net (S, H, W) is x_{t-1} on the network's scale (2 x - 1 of the data). Its measured
        lines are moved (by lam) to the measurement brought to its noise level:
        sqrt(abar) y_net + sqrt(1 - abar) M F z, with y_net = M F (2 x - 1) the measurement on the
        network's scale and z = `noise` (S, H, W). The real part is returned: x_{t-1} is real,
        and the noise on it is symmetric, so a magnitude would fold it.
        """
        device = x_net.device
        y, m = self._y_on(device), self._mask_on(device)
        ones = torch.ones(self.shape, dtype=torch.complex64, device=device)
        y_net = 2 * y * m - m * fft2c(ones)
        target = math.sqrt(abar) * y_net + math.sqrt(1.0 - abar) * m * fft2c(noise.to(device, torch.complex64))
        k = fft2c(x_net.to(torch.complex64))
        out = ifft2c(k - self.lam * m * (k - target)).real
        self.last_info = {"residual_before": self.residual((x_net + 1) / 2),
                          "residual_after": self.residual((out + 1) / 2)}
        return out.to(x_net.dtype)

    def observed(self) -> np.ndarray:
        """The zero-filled image |F^-1 y| (S, H, W), computed once."""
        return self._observed

    def simulate_observed(self, x: Any) -> np.ndarray:
        """The zero-filled image the same mask gives for a volume x: |F^-1 (M ⊙ F x)|."""
        return np.abs(self.op.A_adjoint(self.op.A(np.asarray(x, np.float32))))

    def score(self, x: Any) -> float:
        """DRIFT's score: mean per-slice SSIM of the two zero-filled images."""
        return _ssim_against(self.simulate_observed(x), self.observed())

    def naive_start(self) -> np.ndarray:
        return self.observed().copy()

    def solve(self, start: Any, n_iter: int) -> np.ndarray:
        """`n_iter` iterations of the configured baseline solver, started from `start`."""
        key = "n_iter" if self.solver == "projection" else "max_iter"
        return MRI_BASELINES[self.solver](self.y, self.mask, x0=np.asarray(start, np.float32),
                                          **{**self.solver_params, key: int(n_iter)})


class STEMProblem:
    """Multislice 4D-STEM with the known probe (docs/method.md, "4D-STEM"); Phi is k steps of Eq. (5)."""

    def __init__(self, intensities: Any, geometry: MultisliceGeometry, transform: PowerTransform, *, k: int = 1,
                 sparsity: float = 0.0,
                 positivity: bool = True, form: str = "amplitude", solver: str = "sparse_decomposition",
                 solver_params: dict | None = None, device=None, batch_size: int | None = None,
                 align_candidates: bool = False):
        if k < 1:
            raise ConfigError(f"recon.dart.stem_k: at least one physics step per reverse step, got {k}")
        if solver not in STEM_SOLVERS:
            raise ConfigError(f"recon.drift.stem_solver: expected one of {sorted(STEM_SOLVERS)}, got {solver!r}")
        self.geometry = geometry
        self.model = MultisliceModel(geometry, device=device)
        self.intensities = torch.as_tensor(np.asarray(intensities), dtype=self.model.real_dtype,
                                           device=self.model.device)
        self.transform, self.k, self.sparsity, self.positivity = transform, int(k), float(sparsity), positivity
        self.form, self.batch_size = form, batch_size
        self.solver, self.solver_params = solver, dict(solver_params or {})
        self.align_candidates = bool(align_candidates) and self.periodic_scan()
        self.shape = (self.geometry.n_slices, *self.geometry.gpts)
        self.eta: float | None = None  # warm-started across reverse steps
        self.last_info: dict = {}
        self._held: tuple = (None, None)  # (held-out mask's bytes, its problem), reused across fits
        with torch.no_grad():
            self._observed = self.model.bright_field(intensities=self.intensities).cpu().numpy()

    @classmethod
    def from_sample(cls, sample: dict, transform: PowerTransform, **kwargs) -> "STEMProblem":
        """The problem of one simulated sample (`physdiff.data.stem_sim.load_sample`)."""
        return cls(sample["intensities"], MultisliceGeometry.from_sample(sample), transform, **kwargs)

    def reset(self) -> None:
        """Forget the warm-started step size, so the next DART run starts as on a fresh problem."""
        self.eta, self.last_info = None, {}

    def loss(self, v: Any) -> float:
        """Eq. (2) of a potential (S, H, W) in V·Å."""
        return data_loss(self.model, v, self.intensities, form=self.form, batch_size=self.batch_size)

    def data_step(self, v: torch.Tensor) -> torch.Tensor:
        """k proximal gradient steps of Eq. (5) from v, the step size warm-started from the last call."""
        device, dtype = v.device, v.dtype
        v = v.to(self.model.device, self.model.real_dtype)
        info = {}
        for _ in range(self.k):
            # twice the last accepted step: the backtracking halves it again where it is too long
            v, info = physics_step(self.model, v, self.intensities, eta=None if self.eta is None else 2 * self.eta,
                                   sparsity=self.sparsity, positivity=self.positivity, form=self.form,
                                   batch_size=self.batch_size)
            self.eta = info["eta"]
        self.last_info = {"loss_before": info["loss"], "loss_after": info["loss_new"], "eta": info["eta"],
                          "backtracks": info["backtracks"]}
        return v.to(device, dtype)

    def finalize(self, v: torch.Tensor) -> np.ndarray:
        return self.data_step(v).detach().cpu().numpy().astype(np.float32)

    def fit_loss(self, v: torch.Tensor) -> torch.Tensor:
        """The adaptation loss of a potential v (S, H, W) in V·Å, differentiable: Eq. (2) relative
        to the measurement, L(v) / sum_p ||sqrt(I_p)||^2 (amplitude form; I_p^2 for the intensity form).

        The multislice gradient is taken batch by batch (`loss_and_grad`, one batch of waves in
        memory) and handed on through a surrogate whose value is the loss and whose gradient in
        v is dL/dv, so the prior's graph never holds every scan position's waves."""
        value, grad = loss_and_grad(self.model, v.detach(), self.intensities, form=self.form,
                                    batch_size=self.batch_size)
        scale = self._norm()
        grad = grad.to(v.device, v.dtype)
        return (value + ((v - v.detach()) * grad).sum()) / scale

    def _norm(self) -> float:
        measured = self.intensities.clamp_min(0)
        return float((measured if self.form == "amplitude" else measured**2).sum().clamp_min(1e-30))

    def split_measurement(self, fraction: float, *, seed: int) -> tuple["STEMProblem", np.ndarray]:
        """(the problem of the kept scan positions, the held-out positions (Nx, Ny) as a bool mask):
        a seeded `fraction` of the scan positions is taken out."""
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"held-out fraction must lie in (0, 1), got {fraction}")
        shape = self.geometry.scan_shape
        n = int(np.prod(shape))
        n_held = min(max(1, int(round(fraction * n))), n - 1)
        held = np.zeros(n, bool)
        held[np.random.default_rng(seed).choice(n, n_held, replace=False)] = True
        held = held.reshape(shape)
        return self._subset(~held), held

    def _subset(self, keep: np.ndarray) -> "STEMProblem":
        """The same problem measured at the scan positions `keep` (Nx, Ny) only, as a 1 x P scan."""
        geometry = dataclasses.replace(self.geometry, positions=self.geometry.positions[keep][None])
        intensities = self.intensities.reshape(*self.geometry.scan_shape, *self.geometry.detector_gpts)[
            torch.as_tensor(keep, device=self.intensities.device)][None]
        return STEMProblem(intensities.cpu().numpy(), geometry, self.transform, k=self.k, sparsity=self.sparsity,
                           positivity=self.positivity, form=self.form, solver=self.solver,
                           solver_params=self.solver_params, device=self.model.device, batch_size=self.batch_size)

    def heldout_error(self, v: Any, held: np.ndarray) -> float:
        """Relative data error of v (S, H, W) at the `held` scan positions (Eq. (2) there over
        the measurement's own norm there)."""
        held = np.asarray(held, bool)
        key = held.tobytes()
        if self._held[0] != key:  # the adaptation's first pass asks twice per fit
            self._held = (key, self._subset(held))
        sub = self._held[1]
        potential = torch.as_tensor(np.asarray(v.detach().cpu() if torch.is_tensor(v) else v, np.float32))
        return float(sub.loss(potential) / sub._norm())

    def observed(self) -> np.ndarray:
        """The measured bright-field image (scan grid)."""
        return self._observed

    def simulate_observed(self, v: Any) -> np.ndarray:
        with torch.no_grad():
            return self.model.bright_field(torch.as_tensor(np.asarray(v, np.float32)),
                                           batch_size=self.batch_size).cpu().numpy()

    def score(self, v: Any) -> float:
        """DRIFT's score: SSIM of the candidate's bright field against the measured one."""
        return _ssim_against(self.simulate_observed(v), self.observed())

    def naive_start(self) -> np.ndarray:
        return np.zeros(self.shape, np.float32)

    def periodic_scan(self) -> bool:
        """Whether the scan grid tiles the periodic cell: it starts at pixel 0 and n steps span the
        extent on both axes. Then shifting the potential by one scan step rolls its bright field
        by one scan position."""
        pos, g = self.geometry.positions, self.geometry
        for axis in (0, 1):
            n = pos.shape[axis]
            step = (pos[1, 0, 0] - pos[0, 0, 0]) if axis == 0 else (pos[0, 1, 1] - pos[0, 0, 1])
            if n < 2 or not np.isclose(step * n, g.gpts[axis] * g.sampling[axis], rtol=1e-4):
                return False
        return bool(np.allclose(pos[0, 0], 0.0))

    def align(self, v: Any) -> np.ndarray:
        """The lateral circular shift of v (S, H, W) whose bright field best matches the measured one.

        For a periodic cell scanned on a grid that tiles it (`periodic_scan`), shifting v by one
        scan step rolls its bright field by one position, so one forward simulation scores every
        shift on the scan grid; the best is applied to v as a Fourier shift (exact for a whole
        number of pixels). A translation-invariant prior (`prior.periodic`) draws every shift of
        a sample as likely as the sample itself, so this picks among more draws, not fewer.
        """
        v = np.asarray(v, np.float32)
        bf, observed = self.simulate_observed(v), self.observed()
        ny, nx = bf.shape
        shifts = [(a, b) for a in range(ny) for b in range(nx)]
        scores = [_ssim_against(np.roll(bf, s, axis=(0, 1)), observed) for s in shifts]
        a, b = shifts[int(np.argmax(scores))]
        return shift_periodic(v, (a * v.shape[-2] / ny, b * v.shape[-1] / nx), nonnegative=self.positivity)

    def solve(self, start: Any, n_iter: int) -> np.ndarray:
        """`n_iter` iterations of the configured 4D-STEM solver (Eq. 5 steps by default) from `start`."""
        params = {**self.solver_params, "n_iter": int(n_iter), "progress": False}
        if self.solver != "three_pie":  # 3PIE updates one position at a time
            params.update(form=self.form, batch_size=self.batch_size)
        v, _ = STEM_SOLVERS[self.solver](self.intensities, self.geometry, model=self.model,
                                         v0=torch.as_tensor(np.asarray(start, np.float32)), **params)
        return v.numpy().astype(np.float32)
