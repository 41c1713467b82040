"""The single-coil Cartesian MRI operator: adjointness, norm, projection, data consistency."""

import numpy as np
import pytest
import sigpy as sp
import torch

from physdiff.errors import InputError
from physdiff.physics.mri import MRIForward, data_consistency, fft2c, ifft2c, simulate_kspace, zero_filled


def line_mask(h, w, *, r=4, centre=4, axis=0, offset=0):
    """Every r-th phase-encode line plus a centred band of `centre` lines (rows if axis=0)."""
    n = h if axis == 0 else w
    lines = np.zeros(n, bool)
    lines[offset::r] = True
    lines[n // 2 - centre // 2: n // 2 - centre // 2 + centre] = True
    m = np.broadcast_to(lines[:, None] if axis == 0 else lines[None, :], (h, w))
    return m.copy()


def random_line_mask(rng, s, h, w, frac=0.3):
    """Per-slice masks of random full rows."""
    return np.stack([np.broadcast_to((rng.random(h) < frac)[:, None], (h, w)) for _ in range(s)])


# (backend, leading shape + (S, H, W), dtype, mask kind); odd sizes check the centring.
CASES = [
    ("numpy", (3, 16, 16), np.float32, "rows"),
    ("numpy", (2, 3, 16, 20), np.complex128, "per_slice"),
    ("numpy", (3, 15, 17), np.float64, "cols"),
    ("torch", (4, 32, 32), torch.float32, "rows"),
    ("torch", (2, 4, 32, 32), torch.complex64, "per_slice"),
    ("torch", (3, 15, 17), torch.float64, "cols"),
    ("cuda", (2, 3, 16, 16), torch.complex64, "rows"),
]


def make_case(backend, shape, dtype, kind, seed=0):
    rng = np.random.default_rng(seed)
    *_, s, h, w = shape
    mask = {"rows": line_mask(h, w, r=4, centre=4),
            "cols": line_mask(h, w, r=3, centre=3, axis=1, offset=1),
            "per_slice": random_line_mask(rng, s, h, w)}[kind]
    is_complex = dtype.is_complex if isinstance(dtype, torch.dtype) else np.dtype(dtype).kind == "c"
    x = rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if is_complex else 0)
    y = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    if backend == "numpy":
        return x.astype(dtype), y.astype(np.result_type(dtype, np.complex64)), mask
    if backend == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    device = "cuda" if backend == "cuda" else "cpu"
    cdtype = torch.complex128 if dtype in (torch.float64, torch.complex128) else torch.complex64
    return (torch.as_tensor(x).to(device=device, dtype=dtype), torch.as_tensor(y).to(device=device, dtype=cdtype),
            mask)


def to_numpy(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def inner(a, b):
    """<a, b> = sum conj(a) b, in complex128."""
    return np.vdot(to_numpy(a).astype(np.complex128), to_numpy(b).astype(np.complex128))


@pytest.mark.parametrize("backend, shape, dtype, kind", CASES)
def test_operator_adjoint_norm_projection_and_sigpy(backend, shape, dtype, kind):
    x, y, mask = make_case(backend, shape, dtype, kind)
    op = MRIForward(mask)
    ax, ahy = op.A(x), op.A_adjoint(y)
    assert type(ax) is type(x) and type(ahy) is type(x)
    assert tuple(ax.shape) == tuple(shape) and tuple(ahy.shape) == tuple(shape)

    # adjointness <A x, y> = <x, A^H y>
    lhs, rhs = inner(ax, y), inner(x, ahy)
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)

    # A^H A is an orthogonal projection, so it is idempotent and the power iteration gives ||A|| = 1
    aha = lambda v: op.A_adjoint(op.A(v))  # noqa: E731
    once = aha(y)
    np.testing.assert_allclose(to_numpy(aha(once)), to_numpy(once), atol=1e-5)
    v = y
    for _ in range(20):
        v = aha(v)
        v = v / np.linalg.norm(to_numpy(v))
    assert np.linalg.norm(to_numpy(aha(v))) == pytest.approx(1.0, abs=1e-5)

    # the centred orthonormal FFT agrees with sigpy's, the independent reference
    xn = to_numpy(x)
    np.testing.assert_allclose(to_numpy(fft2c(x)), sp.fft(xn, axes=(-2, -1)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(ifft2c(y)), sp.ifft(to_numpy(y), axes=(-2, -1)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend, shape, dtype, kind", CASES)
def test_data_consistency_keeps_measured_lines(backend, shape, dtype, kind):
    x, other, mask = make_case(backend, shape, dtype, kind, seed=1)
    op = MRIForward(mask)
    y = op.A(ifft2c(other))  # measurement of a different image, so the step has work to do
    m = np.broadcast_to(mask, tuple(shape))
    kx = to_numpy(fft2c(x))

    k1 = to_numpy(fft2c(data_consistency(x, y, mask, lam=1.0)))
    np.testing.assert_allclose(k1[m], to_numpy(y)[m], atol=1e-5)
    np.testing.assert_allclose(k1[~m], kx[~m], atol=1e-5)

    k_half = to_numpy(fft2c(data_consistency(x, y, mask, lam=0.5)))
    np.testing.assert_allclose(k_half[m], 0.5 * kx[m] + 0.5 * to_numpy(y)[m], atol=1e-5)

    np.testing.assert_allclose(to_numpy(data_consistency(x, y, mask, lam=0.0)), to_numpy(x), atol=1e-5)
    mag = data_consistency(x, y, mask, lam=1.0, magnitude=True)
    np.testing.assert_allclose(to_numpy(mag), np.abs(to_numpy(data_consistency(x, y, mask, lam=1.0))), atol=1e-6)


def test_centred_convention_puts_dc_at_n_over_2():
    # closed form: a constant image of ones has all its energy at k = 0, i.e. index (H//2, W//2)
    for h, w in [(8, 8), (7, 9)]:
        k = fft2c(np.ones((1, h, w), np.float32))
        expected = np.zeros((1, h, w), complex)
        expected[0, h // 2, w // 2] = np.sqrt(h * w)
        np.testing.assert_allclose(k, expected, atol=1e-5)


def test_torch_gradient_matches_closed_form():
    # d/dx ||A x - y||^2 for real x is 2 Re A^H (A x - y); DART relies on autograd through A
    x0, y, mask = make_case("torch", (3, 16, 16), torch.float32, "rows", seed=2)
    op = MRIForward(mask)
    x = x0.clone().requires_grad_(True)
    (op.A(x) - op.A(y)).abs().pow(2).sum().backward()
    expected = 2 * op.A_adjoint(op.A(x0) - op.A(y)).real
    torch.testing.assert_close(x.grad, expected, atol=1e-4, rtol=1e-4)


def test_empty_mask_has_zero_norm_and_zero_filled_matches_masked_ifft():
    rng = np.random.default_rng(3)
    x = rng.random((2, 16, 16)).astype(np.float32)
    assert np.abs(MRIForward(np.zeros((16, 16), bool)).A(x)).max() == 0
    mask = line_mask(16, 16)
    y = simulate_kspace(x, mask)
    np.testing.assert_allclose(zero_filled(y, mask), np.abs(np.fft.ifftshift(
        np.fft.ifft2(np.fft.fftshift(y * mask, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))), atol=1e-6)


def test_bad_masks_raise_input_error():
    x = np.zeros((3, 16, 16), np.float32)
    with pytest.raises(InputError, match="last two axes"):
        MRIForward(np.ones((16, 8), bool)).A(x)
    with pytest.raises(InputError, match="per-slice"):
        MRIForward(np.ones((4, 16, 16), bool)).A(x)
    with pytest.raises(InputError, match="boolean"):
        MRIForward(np.full((16, 16), 0.5))
    with pytest.raises(InputError, match="NaN"):
        simulate_kspace(np.full((3, 16, 16), np.nan), np.ones((16, 16), bool))
