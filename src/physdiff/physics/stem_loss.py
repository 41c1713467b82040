"""4D-STEM data fidelity, Eq. (2), and the physics step, Eq. (5) (docs/method.md, "4D-STEM").

Amplitude form:  L(V) = sum_p || sqrt(I_p) - |F psi_S^p(V)| ||^2
Intensity form:  L(V) = sum_p || I_p - |F psi_S^p(V)|^2 ||^2
Physics step:    V <- prox_{eta R}(V - eta grad L(V)),  R(V) = lam ||V||_1 (+ V >= 0),
whose prox is soft thresholding by eta * lam (then clipping at 0 when positivity is on).

Step-size rule (documented choice): backtracking line search for proximal gradient (Beck &
Teboulle 2009). Start from eta0 (the caller's, else a secant estimate 1/L of the gradient's
Lipschitz constant), accept V+ when L(V+) <= L(V) + <g, V+ - V> + ||V+ - V||^2 / (2 eta),
else halve eta (at most ``max_backtracks`` times). ``line_search=False`` takes the step eta0
as is (the fixed rule). The accepted eta is returned so callers can warm-start the next step.
"""

from __future__ import annotations

import math

import torch

from physdiff.errors import InputError
from physdiff.physics.multislice import MultisliceModel

LOSS_FORMS = ("amplitude", "intensity")


def _check(model: MultisliceModel, intensities, form: str) -> torch.Tensor:
    if form not in LOSS_FORMS:
        raise InputError(f"loss form must be one of {LOSS_FORMS}, got {form!r}")
    g = model.geometry
    measured = torch.as_tensor(intensities, device=model.device, dtype=model.real_dtype)
    expected = (*g.scan_shape, *g.detector_gpts)
    if tuple(measured.shape) != expected:
        raise InputError(f"intensities must have shape (Nx, Ny, Kx, Ky) = {expected}, "
                         f"got {tuple(measured.shape)}")
    if not torch.isfinite(measured).all():
        raise InputError("intensities hold NaN or inf values")
    return measured.reshape(-1, *g.detector_gpts)


def _batch_loss(predicted: torch.Tensor, target: torch.Tensor, form: str) -> torch.Tensor:
    """Sum of squared residuals; target is sqrt(I) for the amplitude form, I otherwise."""
    if form == "amplitude":
        # sqrt has an infinite derivative at 0: the tiny floor keeps the gradient finite
        residual = torch.sqrt(predicted + 1e-20) - target
    else:
        residual = predicted - target
    return (residual**2).sum()


def loss_of_transmission(model: MultisliceModel, transmission: torch.Tensor, intensities, *,
                         form: str = "amplitude", batch_size: int | None = None) -> float:
    """Return L, Eq. (2), for given transmission functions O_s (S, H, W) (no gradient)."""
    measured = _check(model, intensities, form)
    target = measured.clamp_min(0).sqrt() if form == "amplitude" else measured
    positions = model.positions_tensor()
    batch_size = model.scan_batch(batch_size)
    total = 0.0
    with torch.no_grad():
        for i in range(0, positions.shape[0], batch_size):
            predicted = model.far_field(model.exit_waves(positions=positions[i:i + batch_size],
                                                         transmission=transmission))
            total += float(_batch_loss(predicted, target[i:i + batch_size], form))
    return total


def loss_and_grad(model: MultisliceModel, potential, intensities, *, form: str = "amplitude",
                  batch_size: int | None = None):
    """Return (L(V) as float, dL/dV as a tensor (S, H, W)), Eq. (2), by autograd.

    Memory stays at one batch of waves: the gradient with respect to the transmission
    functions O_s is accumulated batch by batch, then pulled back to V once.
    """
    measured = _check(model, intensities, form)
    target = measured.clamp_min(0).sqrt() if form == "amplitude" else measured
    positions = model.positions_tensor()
    batch_size = model.scan_batch(batch_size)
    with torch.enable_grad():
        v = model.as_potential(potential).detach().clone().requires_grad_(True)
        t = model.transmission(v)
        t_leaf = t.detach().requires_grad_(True)
        total = 0.0
        for i in range(0, positions.shape[0], batch_size):
            predicted = model.far_field(model.exit_waves(positions=positions[i:i + batch_size],
                                                         transmission=t_leaf))
            batch = _batch_loss(predicted, target[i:i + batch_size], form)
            batch.backward()
            total += float(batch.detach())
        t.backward(t_leaf.grad)
    return total, v.grad.detach()


def data_loss(model: MultisliceModel, potential, intensities, *, form: str = "amplitude",
              batch_size: int | None = None) -> float:
    """Return L(V), Eq. (2), without the gradient."""
    with torch.no_grad():
        transmission = model.transmission(potential)
    return loss_of_transmission(model, transmission, intensities, form=form, batch_size=batch_size)


def prox_sparsity(potential: torch.Tensor, threshold: float, positivity: bool = True) -> torch.Tensor:
    """Prox of threshold ||V||_1 (+ indicator V >= 0): soft thresholding, then clip at 0."""
    shrunk = torch.sign(potential) * torch.clamp(potential.abs() - threshold, min=0.0)
    return shrunk.clamp_min(0.0) if positivity else shrunk


def lipschitz_step(model: MultisliceModel, potential, intensities, *, form: str = "amplitude",
                   batch_size: int | None = None, grad=None, probe_scale: float = 1.0,
                   mask: torch.Tensor | None = None) -> float:
    """Return 1/L with L ~ ||g(V + d) - g(V)|| / ||d||, d = a small step along -g (secant estimate).

    ``probe_scale`` sets ||d|| in V·Å (per-voxel RMS over the voxels that move); a phase of
    sigma * probe_scale is tiny. With ``mask`` (0/1, broadcastable to V) both gradients are
    restricted to the masked voxels, so L is the curvature of the block that the step moves;
    the unmasked gradient of the other blocks would dominate ||g(V + d) - g(V)|| and make a
    layer-wise step start far too small.
    """
    v = model.as_potential(potential).detach()
    if grad is None:
        _, grad = loss_and_grad(model, v, intensities, form=form, batch_size=batch_size)
    weight = torch.ones_like(v) if mask is None else torch.broadcast_to(mask.to(v.dtype), v.shape)
    gradient_at = lambda d: loss_and_grad(model, v + d, intensities, form=form, batch_size=batch_size)[1] * weight  # noqa: E731
    return _secant_step(grad * weight, weight.sum(), gradient_at, probe_scale)


def _secant_step(grad: torch.Tensor, count, gradient_at, probe_scale: float = 1.0) -> float:
    """1/L, L = ||gradient_at(d) - grad|| / ||d||, d = -grad scaled to RMS `probe_scale` over `count` voxels."""
    rms = (grad.pow(2).sum() / count).sqrt() if count > 0 else torch.zeros(())
    if not torch.isfinite(rms) or rms == 0:
        return 1.0
    d = -grad * (probe_scale / rms)
    lipschitz = float((gradient_at(d) - grad).norm() / d.norm())
    return 1.0 / lipschitz if lipschitz > 0 and math.isfinite(lipschitz) else 1.0


def _backtrack(v: torch.Tensor, grad: torch.Tensor, loss: float, eta: float, candidate, loss_of,
               max_backtracks: int):
    """Halve eta until candidate(eta) meets the sufficient-decrease bound; (new, its loss, eta, halvings)."""
    new, backtracks = candidate(eta), 0
    new_loss = loss_of(new)
    while backtracks < max_backtracks:
        diff = new - v
        bound = loss + float((grad * diff).sum()) + float((diff**2).sum()) / (2 * eta)
        if math.isfinite(new_loss) and new_loss <= bound:
            break
        eta *= 0.5
        backtracks += 1
        new = candidate(eta)
        new_loss = loss_of(new)
    return new, new_loss, eta, backtracks


def physics_step(model: MultisliceModel, potential, intensities, *, eta: float | None = None,
                 sparsity: float = 0.0, positivity: bool = True, form: str = "amplitude",
                 line_search: bool = True, max_backtracks: int = 20, batch_size: int | None = None,
                 mask: torch.Tensor | None = None):
    """One proximal gradient step of Eq. (5); return (V_new, info).

    ``sparsity`` is lam in R(V) = lam ||V||_1 (units of L per V·Å); the prox threshold is
    eta * lam (V·Å). ``mask`` (broadcastable to V, 0/1) restricts the step to some
    voxels, e.g. one slice for layer-wise updates. info holds loss (before), loss_new, eta
    (accepted), backtracks; loss_new is None with ``line_search=False`` (saves a forward).
    """
    v = model.as_potential(potential).detach()
    loss, grad = loss_and_grad(model, v, intensities, form=form, batch_size=batch_size)
    if mask is not None:
        grad = grad * mask
    if eta is None:
        eta = lipschitz_step(model, v, intensities, form=form, batch_size=batch_size, grad=grad, mask=mask)

    def candidate(step):
        new = prox_sparsity(v - step * grad, step * sparsity, positivity)
        return new if mask is None else torch.where(mask.bool(), new, v)

    if not line_search:
        return candidate(eta), {"loss": loss, "loss_new": None, "eta": eta, "backtracks": 0}
    new, new_loss, eta, backtracks = _backtrack(
        v, grad, loss, eta, candidate,
        lambda new: data_loss(model, new, intensities, form=form, batch_size=batch_size), max_backtracks)
    return new, {"loss": loss, "loss_new": new_loss, "eta": eta, "backtracks": backtracks}


def _suffix_far_field(model: MultisliceModel, waves: torch.Tensor, transmission: torch.Tensor, b: int,
                      t_b: torch.Tensor) -> torch.Tensor:
    """Far field of `waves` entering slice b, through slices b..S-1 (slice b's O given as t_b)."""
    last = transmission.shape[0] - 1
    for s in range(b, last):
        waves = model.propagate(waves * (t_b if s == b else transmission[s]), s)
    return model.far_field(waves * (t_b if b == last else transmission[last]))


def _suffix_loss(model, waves, transmission, b, v_b, target, form, batch_size, grad: bool):
    """(L, dL/dV_b or None) with the waves entering slice b fixed, batch by batch over positions."""
    with torch.enable_grad() if grad else torch.no_grad():
        v_b = v_b.detach().clone().requires_grad_(grad)
        t_b = model.slice_transmission(v_b)
        t_leaf = t_b.detach().requires_grad_(grad)
        total = 0.0
        for i in range(0, waves.shape[0], batch_size):
            batch = _batch_loss(_suffix_far_field(model, waves[i:i + batch_size], transmission, b, t_leaf),
                                target[i:i + batch_size], form)
            if grad:
                batch.backward()
            total += float(batch.detach())
        if not grad:
            return total, None
        t_b.backward(t_leaf.grad)
    return total, v_b.grad.detach()


def layerwise_sweep(model: MultisliceModel, potential, intensities, *, etas, sparsity: float = 0.0,
                    positivity: bool = True, form: str = "amplitude", line_search: bool = True,
                    max_backtracks: int = 20, batch_size: int | None = None):
    """One layer-wise sweep: `physics_step` on slice 0, then slice 1, ..., each restricted to its slice.

    The same steps as `physics_step(..., mask=slice b)` in turn (up to the order of floating-point
    sums), at about half the cost: the waves entering slice b depend only on the slices before it,
    which the sweep has already updated, so they are kept for every scan position (P x H x W
    complex, advanced by one slice after each step) and slice b's loss, gradient and line search
    propagate through slices b..S-1 only. `etas[b]` is slice b's starting step (None: the secant
    estimate of `lipschitz_step`). Returns (V_new, [info per slice]); stops early at a non-finite
    slice.
    """
    measured = _check(model, intensities, form)
    target = measured.clamp_min(0).sqrt() if form == "amplitude" else measured
    v = model.as_potential(potential).detach().clone()
    if len(etas) != v.shape[0]:
        raise InputError(f"layerwise_sweep: one starting step per slice ({v.shape[0]}), got {len(etas)}")
    with torch.no_grad():
        transmission = model.transmission(v)
        waves = model.incident_waves(model.positions_tensor())
    args = (target, form, model.scan_batch(batch_size))
    infos = []
    for b, eta in enumerate(etas):
        loss, grad = _suffix_loss(model, waves, transmission, b, v[b], *args, grad=True)
        if eta is None:  # lipschitz_step's secant estimate, restricted to slice b
            eta = _secant_step(grad, grad.numel(),
                               lambda d: _suffix_loss(model, waves, transmission, b, v[b] + d, *args, grad=True)[1])
        candidate = lambda step: prox_sparsity(v[b] - step * grad, step * sparsity, positivity)  # noqa: E731
        new, new_loss, backtracks = candidate(eta), None, 0
        if line_search:
            new, new_loss, eta, backtracks = _backtrack(
                v[b], grad, loss, eta, candidate,
                lambda new: _suffix_loss(model, waves, transmission, b, new, *args, grad=False)[0], max_backtracks)
        v[b] = new
        infos.append({"loss": loss, "loss_new": new_loss, "eta": eta, "backtracks": backtracks})
        if not bool(torch.isfinite(new).all()):
            break
        with torch.no_grad():
            transmission[b] = model.slice_transmission(new)
            if b + 1 < v.shape[0]:
                waves = model.propagate(waves * transmission[b], b)
    return v, infos
