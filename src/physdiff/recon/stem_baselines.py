"""Classical 4D-STEM multislice reconstructions with the known probe (docs/method.md, "Baselines").

All three are re-implementations written for this project, share one call style,

    V, info = method(intensities, geometry, *, v0=None, n_iter, ..., progress=True)

start from ``v0``, a potential (S, H, W) in V·Å (default None: the naive guess V = 0,
transmission O_s = 1; any volume, e.g. a prior sample, for a physics-only twin), and return
the potential (S, H, W) in V·Å as a CPU float32 tensor plus info: method, iterations,
final_loss, loss_history (Eq. 2, amplitude form unless stated, of the potential each
iterate returns, entry 0 = the start),
best_iteration, diverged, stop_rule. ``callback(iteration, V, loss)``, if given, sees each
iterate (gauge applied), e.g. for logging. ``num_threads`` sets torch's CPU threads for the
run (None leaves them): 3PIE defaults to 1 because its per-position ops on small grids are
dominated by thread synchronisation (measured 0.23 s on 1 thread vs 39 s on 2 busy cores).
Divergence (a non-finite loss or potential, or a loss
above ``divergence_factor`` times the starting loss) stops the run and returns the best
iterate so far with diverged=True; it never raises.

Gauge: a constant phase per slice changes no intensity, so V_s is defined only up to an
additive constant (gradients never move a slice's mean). With ``gauge="min"`` (default) each
returned slice is shifted so that its minimum is 0, the value a projected potential takes
between atoms, which uses no ground truth; ``gauge="none"`` returns the raw iterate.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from physdiff.errors import InputError
from physdiff.physics.multislice import MultisliceGeometry, MultisliceModel
from physdiff.physics.stem_loss import data_loss, layerwise_sweep, loss_and_grad, physics_step


class _Tracker:
    """Keeps the loss history and the best iterate; decides divergence."""

    def __init__(self, method: str, loss0: float, start: torch.Tensor, factor: float, rule: str):
        self.info = {"method": method, "iterations": 0, "loss_history": [loss0],
                     "best_iteration": 0, "diverged": False, "stop_rule": rule}
        self.loss0, self.factor = loss0, factor
        self.best_loss, self.best = loss0, start.detach().clone()

    def update(self, loss: float, iterate: torch.Tensor, callback=None, potential=None) -> bool:
        """Record one iteration; return True when the run must stop (divergence)."""
        self.info["iterations"] += 1
        if callback is not None:
            callback(self.info["iterations"], iterate if potential is None else potential, loss)
        self.info["loss_history"].append(loss)
        bad = (not math.isfinite(loss) or not bool(torch.isfinite(iterate).all())
               or loss > self.factor * self.loss0)
        if bad:
            self.info["diverged"] = True
            return True
        if loss < self.best_loss:
            self.best_loss, self.best = loss, iterate.detach().clone()
            self.info["best_iteration"] = self.info["iterations"]
        return False

    def result(self, final: torch.Tensor, use_best: bool):
        chosen = self.best if (use_best or self.info["diverged"]) else final.detach()
        self.info["final_loss"] = self.best_loss if (use_best or self.info["diverged"]) \
            else self.info["loss_history"][-1]
        return chosen, self.info


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Temporarily set torch's intra-op threads (None: leave them); restored on exit."""
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _with_threads(method):
    """Run the method under ``_torch_threads(num_threads)``, with the method's default."""
    default = inspect.signature(method).parameters["num_threads"].default

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _torch_threads(kwargs.get("num_threads", default)):
            return method(*args, **kwargs)
    return wrapper


def _apply_gauge(potential: torch.Tensor, gauge: str) -> torch.Tensor:
    if gauge == "none":
        return potential
    return potential - potential.flatten(1).min(dim=1).values[:, None, None]


def _setup(intensities, geometry, model, device, dtype, gauge="min", v0=None):
    if gauge not in ("min", "none"):
        raise InputError(f"gauge must be 'min' or 'none', got {gauge!r}")
    if not isinstance(geometry, MultisliceGeometry):
        raise InputError(f"geometry must be a MultisliceGeometry, got {type(geometry).__name__}")
    model = model or MultisliceModel(geometry, device=device, dtype=dtype)
    # a tensor may already live on a GPU (a STEMProblem keeps its measurement on its model's device)
    measured = (intensities.detach().to(model.device, model.real_dtype) if torch.is_tensor(intensities)
                else torch.as_tensor(np.asarray(intensities), dtype=model.real_dtype, device=model.device))
    shape = (geometry.n_slices, *geometry.gpts)
    if v0 is None:
        return model, measured, torch.zeros(shape, dtype=model.real_dtype, device=model.device)
    start = torch.as_tensor(np.asarray(v0.detach().cpu() if torch.is_tensor(v0) else v0),
                            dtype=model.real_dtype).to(model.device)
    if tuple(start.shape) != shape:
        raise InputError(f"initial potential v0 must have shape (S, H, W) = {shape}, got {tuple(start.shape)}")
    if not bool(torch.isfinite(start).all()):
        raise InputError("initial potential v0 holds NaN or inf values")
    return model, measured, start


# 3PIE's modulus constraint Psi' = sqrt(I) Psi / (|Psi| + eps max|Psi|). Where the modelled far field
# is zero (dark field of a flat start), the phase of Psi is rounding noise: a bare sqrt(I) Psi/|Psi|
# then imposes a phase that differs between CPU and CUDA, and between complex64 and complex128.
MODULUS_EPS = 1e-3


@_with_threads
def three_pie(intensities, geometry: MultisliceGeometry, *, v0=None, n_iter: int = 20,
              step_object: float = 1.0, step_wave: float = 1.0, seed: int = 0,
              divergence_factor: float = 10.0, model: MultisliceModel | None = None,
              device=None, dtype=torch.complex64, gauge: str = "min", callback=None,
              num_threads: int | None = 1, progress: bool = True):
    """3PIE, multislice ePIE (Maiden, Humphry & Rodenburg 2012), known probe; a re-implementation.

    Works on the complex transmission functions O_s (start O_s = exp(i sigma v0), 1 for
    v0 = None). Per position p, in a seeded random order, the forward pass stores the wave
    psi_s entering each slice; the far field Psi = H_S F[O_S psi_S] gets the measured modulus
    on the detector pixels (others kept), Psi' = sqrt(I_p) Psi / (|Psi| + 1e-3 max|Psi|)
    (`MODULUS_EPS`: where Psi is zero its phase is rounding noise, which a bare Psi / |Psi|
    would impose); the exit-wave change chi_S = F^-1[conj(H_S) (Psi' - Psi)] then runs
    backward through the slices s = S..1:
        O_s   += step_object conj(psi_s) / max|psi_s|^2 chi_s
        psi_s += step_wave  conj(O_s) / max|O_s|^2 chi_s   (old O_s; the probe psi_1 is known)
        chi_{s-1} = F^-1[conj(H_{s-1}) F[psi_s change]]
    After each sweep O is band-limited by the antialias aperture, as the forward model's
    transmission is. The returned potential is V_s = angle(O_s) / sigma (phases beyond
    +-pi wrap, far above a few-Å slice of these crystals). One iteration is one sweep; its
    loss is Eq. (2) of that returned potential, re-evaluated through the model (O itself
    drifts off |O| = 1, which V cannot express, so O's own loss would flatter the result).
    """
    model, measured, start = _setup(intensities, geometry, model, device, dtype, gauge, v0)
    s_count = geometry.n_slices
    kx, ky = geometry.detector_gpts
    # measured moduli placed on the full FFT grid; pixels off the detector stay free
    amplitude = torch.zeros((measured.reshape(-1, kx, ky).shape[0], *geometry.gpts),
                            dtype=model.real_dtype, device=model.device)
    on_detector = torch.zeros(geometry.gpts, dtype=torch.bool, device=model.device)
    on_detector[model.crop_x[:, None], model.crop_y[None, :]] = True
    moduli = measured.reshape(-1, kx, ky).clamp_min(0).sqrt()
    amplitude[:, model.crop_x[:, None], model.crop_y[None, :]] = moduli
    positions = model.positions_tensor()
    rng = np.random.default_rng(seed)
    obj = torch.exp(1j * geometry.sigma * start.to(model.real_dtype)).to(model.dtype)

    def potential_of(transmission):
        return torch.angle(transmission) / geometry.sigma

    tracker = _Tracker("3pie", data_loss(model, potential_of(obj), measured), obj, divergence_factor,
                       f"fixed sweeps n_iter={n_iter}; best loss iterate kept on divergence")
    last_h = model.propagators[-1]
    with torch.no_grad():
        for _ in tqdm(range(n_iter), desc="3PIE", disable=not progress):
            for p in rng.permutation(positions.shape[0]):
                psi = [model.incident_waves(positions[p:p + 1])[0]]
                for s in range(s_count - 1):
                    psi.append(model.propagate(psi[s] * obj[s], s))
                spectrum = torch.fft.fft2(psi[-1] * obj[-1]) * last_h
                magnitude = spectrum.abs()
                corrected = amplitude[p] * spectrum / (magnitude + MODULUS_EPS * magnitude.max())
                change = torch.where(on_detector, corrected - spectrum, 0)
                chi = torch.fft.ifft2(change * last_h.conj())
                for s in range(s_count - 1, -1, -1):
                    o_old = obj[s].clone()
                    obj[s] += step_object * psi[s].conj() / (psi[s].abs() ** 2).max() * chi
                    if s > 0:
                        wave_change = step_wave * o_old.conj() / (o_old.abs() ** 2).max() * chi
                        chi = model.propagate(wave_change, s - 1, adjoint=True)
            obj = torch.fft.ifft2(torch.fft.fft2(obj) * model.antialias)
            if tracker.update(data_loss(model, potential_of(obj), measured), obj, callback,
                              _apply_gauge(potential_of(obj), gauge)):
                break
    best, info = tracker.result(obj, use_best=False)
    return _apply_gauge(potential_of(best), gauge).float().cpu(), info


@_with_threads
def torchslice(intensities, geometry: MultisliceGeometry, *, v0=None, n_iter: int = 30, lr: float = 20.0,
               form: str = "amplitude", batch_size: int | None = None, divergence_factor: float = 10.0,
               model: MultisliceModel | None = None, device=None, dtype=torch.complex64,
               gauge: str = "min", callback=None, num_threads: int | None = None,
               progress: bool = True):
    """Torchslice-style reconstruction (after Diederichs et al. 2024), a re-implementation.

    Gradient descent by automatic differentiation through our torch multislice model, with
    no prior: Adam (learning rate ``lr`` in V·Å per step) on V from ``v0``, one full-batch
    gradient of Eq. (2) per iteration. Adam moves a voxel by at most about ``lr`` per
    step, so n_iter * lr must reach the true peaks (hundreds to thousands of V·Å): the
    defaults, 30 iterations at 20 V·Å, allow 600. Stopping rule (recorded in info): a fixed
    iteration count, default 30, because the phase-projection SSIM peaks early and then
    drifts while the loss keeps falling (docs/method.md, "Conventions"); the pipeline chooses
    the count and ``lr`` on validation samples (`physdiff.recon.run.tune_stem_baseline`). The
    last iterate is returned unless the run diverged.
    """
    model, measured, v = _setup(intensities, geometry, model, device, dtype, gauge, v0)
    v = v.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([v], lr=lr)
    tracker = _Tracker("torchslice", data_loss(model, v.detach(), measured, form=form), v,
                       divergence_factor, f"fixed iteration count n_iter={n_iter} (Adam lr={lr})")
    for _ in tqdm(range(n_iter), desc="Torchslice", disable=not progress):
        _, grad = loss_and_grad(model, v.detach(), measured, form=form, batch_size=batch_size)
        v.grad = grad
        optimiser.step()
        loss = data_loss(model, v.detach(), measured, form=form, batch_size=batch_size)
        if tracker.update(loss, v.detach(), callback, _apply_gauge(v.detach(), gauge)):
            break
    best, info = tracker.result(v, use_best=False)
    return _apply_gauge(best, gauge).float().cpu(), info


@_with_threads
def sparse_decomposition(intensities, geometry: MultisliceGeometry, *, v0=None, n_iter: int = 10,
                         sparsity: float = 1e-6, positivity: bool = True, layerwise: bool = True,
                         eta: float | None = None, line_search: bool = True,
                         form: str = "amplitude", batch_size: int | None = None,
                         divergence_factor: float = 10.0, model: MultisliceModel | None = None,
                         device=None, dtype=torch.complex64, gauge: str = "min",
                         callback=None, num_threads: int | None = None,
                         progress: bool = True):
    """Sparse-decomposition reconstruction (after Bangun et al. 2022), a re-implementation.

    Layer-wise proximal gradient: in each iteration the slices are updated one after the
    other, each by one physics step of Eq. (5) restricted to that slice,
    V_s <- prox(V_s - eta_s dL/dV_s), with soft thresholding (lam = ``sparsity``, in units
    of the loss per V·Å, > 0: with 0 it would be plain projected gradient descent) and
    positivity; eta_s comes from the backtracking line search of ``physics_step``, started
    at the secant Lipschitz estimate and then at twice the last accepted value. With
    ``layerwise=False`` the whole volume takes one step per iteration. Starts at ``v0``.
    """
    model, measured, v = _setup(intensities, geometry, model, device, dtype, gauge, v0)
    tracker = _Tracker("sparse_decomposition", data_loss(model, v, measured, form=form), v,
                       divergence_factor, f"fixed iteration count n_iter={n_iter}")
    steps = [eta] * (geometry.n_slices if layerwise else 1)
    loss = tracker.loss0
    for _ in tqdm(range(n_iter), desc="Sparse decomposition", disable=not progress):
        if layerwise:  # physics_step on each slice in turn, reusing the waves entering it
            v, infos = layerwise_sweep(model, v, measured, etas=steps, sparsity=sparsity, positivity=positivity,
                                       form=form, line_search=line_search, batch_size=batch_size)
        else:
            v, info = physics_step(model, v, measured, eta=steps[0], sparsity=sparsity, positivity=positivity,
                                   form=form, line_search=line_search, batch_size=batch_size)
            infos = [info]
        if line_search and eta is None:
            steps[:len(infos)] = [2 * info["eta"] for info in infos]
        loss = data_loss(model, v, measured, form=form, batch_size=batch_size) \
            if bool(torch.isfinite(v).all()) else float("nan")
        if tracker.update(loss, v, callback, _apply_gauge(v, gauge)):
            break
    best, info = tracker.result(v, use_best=False)
    return _apply_gauge(best, gauge).float().cpu(), info
