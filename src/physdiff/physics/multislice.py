"""Batched torch multislice forward model of 4D-STEM (docs/method.md, "4D-STEM" and "Conventions").

For scan position r_p and slices s = 1..S (potential V_s in V·Å, thickness dz_s in Å):

    psi_1 = P(r - r_p),  P = ifft2(Psi(k)),  Psi(k) -> Psi(k) exp(-2 pi i k.r_p)
    psi_{s+1} = F^-1[ H_s(k) F[ O_s psi_s ] ],  O_s = F^-1[ A(k) F exp(i sigma V_s) ]
    H_s(k) = A(k) exp(-i pi lambda dz_s |k|^2)
    I_p = crop(|F[O_S psi_S] H_S|^2), fftshifted

with A the antialias aperture (2/3 of Nyquist, raised-cosine edge). The propagation after
the last slice is folded into the detector: |F[.] H_S|^2 = |F[.]|^2 A^2, saving two FFTs.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from physdiff.errors import InputError
from physdiff.physics import probe as _probe

_REAL = {torch.complex64: torch.float32, torch.complex128: torch.float64}


@dataclasses.dataclass(frozen=True, eq=False)
class MultisliceGeometry:
    """Everything the forward model needs besides the potential; lengths in Å, angles in mrad."""

    energy: float  # eV
    semiangle: float  # mrad
    defocus: float  # Å, abTEM sign: defocus = -C10
    sampling: tuple[float, float]  # Å
    gpts: tuple[int, int]
    slice_thickness: tuple[float, ...]  # Å, one per slice
    sigma: float  # rad / (V·Å)
    wavelength: float  # Å
    positions: np.ndarray  # (Nx, Ny, 2) Å, from pixel 0
    max_angle: str = "valid"
    detector_gpts: tuple[int, int] | None = None

    def __post_init__(self):
        if self.max_angle not in ("valid", "cutoff", "full"):
            raise InputError(f"max_angle must be 'valid', 'cutoff' or 'full', got {self.max_angle!r}")
        positions = np.asarray(self.positions, dtype=np.float64)
        if positions.ndim != 3 or positions.shape[-1] != 2:
            raise InputError(f"positions must have shape (Nx, Ny, 2) in Å, got {positions.shape}")
        object.__setattr__(self, "positions", positions)
        expected = _probe.detector_gpts(self.max_angle, self.gpts, self.sampling)
        if self.detector_gpts is None:
            object.__setattr__(self, "detector_gpts", expected)
        elif tuple(int(n) for n in self.detector_gpts) != expected:
            raise InputError(
                f"detector_gpts {tuple(self.detector_gpts)} does not match max_angle="
                f"{self.max_angle!r} on a {self.gpts} grid (abTEM gives {expected})"
            )
        else:
            object.__setattr__(self, "detector_gpts", expected)

    @property
    def n_slices(self) -> int:
        return len(self.slice_thickness)

    @property
    def scan_shape(self) -> tuple[int, int]:
        return tuple(self.positions.shape[:2])

    @property
    def angular_sampling(self) -> tuple[float, float]:
        """Detector pixel size in mrad: 1e3 lambda / extent."""
        return tuple(1e3 * self.wavelength / (n * d) for n, d in zip(self.gpts, self.sampling))

    @classmethod
    def from_sample(cls, sample: dict) -> "MultisliceGeometry":
        """Build the geometry from a 4D-STEM sample dict (the stem_sim data contract)."""
        keys = ["energy", "semiangle", "defocus", "sampling", "gpts", "slice_thickness",
                "sigma", "wavelength", "positions", "max_angle"]
        missing = [k for k in keys if k not in sample]
        if missing:
            raise InputError(f"4D-STEM sample lacks the keys {missing}; expected all of {keys}")
        gpts = tuple(int(n) for n in np.asarray(sample["gpts"]).ravel())
        sampling = tuple(float(d) for d in np.asarray(sample["sampling"]).ravel())
        if len(gpts) != 2 or len(sampling) != 2:
            raise InputError(f"sample 'gpts' and 'sampling' must have 2 entries, got {gpts}, {sampling}")
        det = sample.get("detector_gpts")
        return cls(
            energy=float(sample["energy"]),
            semiangle=float(sample["semiangle"]),
            defocus=float(sample["defocus"]),
            sampling=sampling,
            gpts=gpts,
            slice_thickness=tuple(float(t) for t in np.asarray(sample["slice_thickness"]).ravel()),
            sigma=float(sample["sigma"]),
            wavelength=float(sample["wavelength"]),
            positions=np.asarray(sample["positions"], dtype=np.float64),
            max_angle=str(np.asarray(sample["max_angle"]).item()),
            detector_gpts=None if det is None else tuple(int(n) for n in np.asarray(det).ravel()),
        )


def default_device() -> torch.device:
    """CUDA where available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# Scan positions per batch on the CPU: loss and gradient on one thread were as fast at 16 as at
# 32 and slower at 64 and 128 (benchmarks/stem_batch.py; figures in benchmarks/README.md).
CPU_SCAN_BATCH = 16
# On CUDA a batch may take this share of the free memory: headroom for the caller's tensors, a
# choice rather than a measurement (the default scan, 368 positions of 8 x 64 x 64, needs ~0.27 GB).
CUDA_MEMORY_SHARE = 0.25


class MultisliceModel:
    """The multislice forward operator V -> I for one geometry; grids are built once.

    ``dtype`` is the complex dtype of the waves (complex64 default, complex128 for tests);
    potentials are cast to its real counterpart. All methods are differentiable in V.
    """

    def __init__(self, geometry: MultisliceGeometry, device=None, dtype=torch.complex64):
        if dtype not in _REAL:
            raise InputError(f"dtype must be torch.complex64 or torch.complex128, got {dtype}")
        g = geometry
        self.geometry = g
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype
        self.real_dtype = _REAL[dtype]
        cast = dict(device=self.device, dtype=dtype)
        kx, ky = _probe.spatial_frequencies(g.gpts, g.sampling)
        self.kx = kx.to(device=self.device, dtype=self.real_dtype)
        self.ky = ky.to(device=self.device, dtype=self.real_dtype)
        antialias = _probe.antialias_aperture(g.gpts, g.sampling)
        self.antialias = antialias.to(device=self.device, dtype=self.real_dtype)
        self.probe_k = _probe.probe_fourier(g.gpts, g.sampling, g.wavelength, g.semiangle,
                                            g.defocus).to(**cast)
        dz = torch.tensor(g.slice_thickness, dtype=torch.float64)[:, None, None]
        k2 = kx**2 + ky**2
        self.propagators = (antialias * torch.exp(-1j * math.pi * g.wavelength * dz * k2)).to(**cast)
        self.crop_x = _probe.crop_indices(g.gpts[0], g.detector_gpts[0]).to(self.device)
        self.crop_y = _probe.crop_indices(g.gpts[1], g.detector_gpts[1]).to(self.device)
        weight = (antialias**2)[self.crop_x.cpu()][:, self.crop_y.cpu()]
        self.detector_weight = weight.to(device=self.device, dtype=self.real_dtype)
        # bright-field pixels: scattering angle below the probe semi-angle (abTEM's
        # AnnularDetector(inner=0, outer=semiangle) keeps alpha < outer)
        alpha = 1e3 * g.wavelength * torch.sqrt(k2)
        alpha = alpha[self.crop_x.cpu()][:, self.crop_y.cpu()]
        self.bright_field_mask = (alpha < g.semiangle).to(device=self.device, dtype=self.real_dtype)

    def scan_batch(self, batch_size: int | None = None) -> int:
        """Scan positions per batch: `batch_size` if given, else chosen for the device.

        On the CPU, CPU_SCAN_BATCH (bigger batches were slower there). On CUDA one batch of 16
        leaves the GPU idle between kernel launches, so the whole scan goes in one batch where
        its waves fit CUDA_MEMORY_SHARE of the free memory (the loss-and-gradient pass keeps
        about S + 3 complex H x W waves per position, doubled for FFT workspace), else as many
        positions as do. Results do not depend on the batch, up to float rounding.
        """
        if batch_size is not None:
            if int(batch_size) < 1:
                raise InputError(f"scan batch size must be a positive integer, got {batch_size}")
            return int(batch_size)
        if self.device.type != "cuda":
            return CPU_SCAN_BATCH
        g = self.geometry
        n_positions = int(np.prod(g.scan_shape))
        per_position = 2 * (len(g.slice_thickness) + 3) * g.gpts[0] * g.gpts[1] * self.dtype.itemsize
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, min(n_positions, int(CUDA_MEMORY_SHARE * free) // per_position))

    # -- pieces ---------------------------------------------------------------------------
    def positions_tensor(self, positions=None) -> torch.Tensor:
        """Return scan positions as a (P, 2) real tensor in Å (geometry's scan by default)."""
        pos = self.geometry.positions if positions is None else positions
        if not torch.is_tensor(pos):
            pos = torch.as_tensor(np.asarray(pos, dtype=np.float64))
        return pos.reshape(-1, 2).to(device=self.device, dtype=self.real_dtype)

    def transmission(self, potential: torch.Tensor) -> torch.Tensor:
        """Return band-limited O_s = F^-1[A F exp(i sigma V_s)], complex (S, H, W)."""
        return self.slice_transmission(self.as_potential(potential))

    def slice_transmission(self, potential: torch.Tensor) -> torch.Tensor:
        """O_s of any stack of slices (..., H, W) of V, e.g. one slice (H, W); no check against S."""
        phase = self.geometry.sigma * potential.to(self.device, self.real_dtype)
        t = torch.polar(torch.ones_like(phase), phase)
        return torch.fft.ifft2(torch.fft.fft2(t) * self.antialias)

    def incident_waves(self, positions: torch.Tensor) -> torch.Tensor:
        """Return shifted probes ifft2(Psi(k) exp(-2 pi i k.r_p)), complex (B, H, W)."""
        # the ramp is separable: two small 1D exponentials instead of B*H*W sines; float64
        # phases before the cast because k.r reaches ~1e3 rad on large cells
        x = positions[:, 0, None, None].double()
        y = positions[:, 1, None, None].double()
        ramp_x = torch.exp(-2j * math.pi * self.kx.double() * x).to(self.dtype)  # (B, H, 1)
        ramp_y = torch.exp(-2j * math.pi * self.ky.double() * y).to(self.dtype)  # (B, 1, W)
        return torch.fft.ifft2(self.probe_k * ramp_x * ramp_y)

    def propagate(self, waves: torch.Tensor, s: int, adjoint: bool = False) -> torch.Tensor:
        """Apply F^-1 H_s F (or its adjoint, the backward propagator) to real-space waves."""
        h = self.propagators[s].conj() if adjoint else self.propagators[s]
        # in place: fft2 saves nothing for backward, so its output may be overwritten
        return torch.fft.ifft2(torch.fft.fft2(waves).mul_(h))

    def far_field(self, exit_waves: torch.Tensor) -> torch.Tensor:
        """Return crop(fftshift(|F[psi_S O_S]|^2 A^2)) on the detector grid, real (B, Kx, Ky)."""
        spectrum = torch.fft.fft2(exit_waves)[:, self.crop_x][:, :, self.crop_y]
        return (spectrum.real**2 + spectrum.imag**2) * self.detector_weight

    # -- the operator ---------------------------------------------------------------------
    def exit_waves(self, potential=None, positions=None, *, transmission=None) -> torch.Tensor:
        """Return O_S psi_S (the wave leaving the last slice, before the last propagation).

        ``positions`` is a (P, 2) tensor/array in Å; pass ``transmission`` to reuse O_s.
        """
        t = self.transmission(potential) if transmission is None else transmission
        pos = self.positions_tensor(positions)
        psi = self.incident_waves(pos)
        for s in range(t.shape[0] - 1):
            psi = self.propagate(psi * t[s], s)
        return psi * t[-1]

    def forward(self, potential, positions=None, batch_size: int | None = None, *, transmission=None):
        """Return diffraction intensities (Nx, Ny, Kx, Ky) for the scan (or (P, Kx, Ky)).

        ``batch_size`` positions go through at a time (None: `scan_batch`'s choice for the device).
        """
        t = self.transmission(potential) if transmission is None else transmission
        pos = self.positions_tensor(positions)
        batch_size = self.scan_batch(batch_size)
        out = [self.far_field(self.exit_waves(positions=pos[i:i + batch_size], transmission=t))
               for i in range(0, pos.shape[0], batch_size)]
        intensities = torch.cat(out)
        shape = self._scan_shape(positions)
        return intensities.reshape(*shape, *intensities.shape[1:])

    __call__ = forward

    def bright_field(self, potential=None, positions=None, batch_size: int | None = None, *,
                     intensities=None) -> torch.Tensor:
        """Return B(r_p) = sum of I_p over detector pixels with alpha < semiangle."""
        if intensities is None:
            intensities = self.forward(potential, positions, batch_size)
        intensities = torch.as_tensor(intensities, device=self.device)
        return (intensities * self.bright_field_mask.to(intensities.dtype)).sum(dim=(-2, -1))

    # -- checks ---------------------------------------------------------------------------
    def _scan_shape(self, positions) -> tuple[int, ...]:
        if positions is None:
            return self.geometry.scan_shape
        shape = tuple(np.shape(positions))[:-1]
        return shape if len(shape) else (1,)

    def as_potential(self, potential) -> torch.Tensor:
        """Return V as a real tensor (S, H, W) on the model's device; InputError on bad shape."""
        potential = torch.as_tensor(potential, device=self.device)
        expected = (self.geometry.n_slices, *self.geometry.gpts)
        if tuple(potential.shape) != expected:
            raise InputError(f"potential must have shape (S, H, W) = {expected}, "
                             f"got {tuple(potential.shape)}")
        return potential.to(self.real_dtype)
