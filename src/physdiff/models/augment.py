"""Augmentation of MRI training slabs: field of view, contrast, bias field, noise and resolution.

The synthetic FLAIR volumes have one field of view (the whole head, with a black margin), one
contrast, no coil shading, no noise and one resolution; real scans vary in all five, and a
prior that knows only the generator pulls DART toward it (benchmarks/real_mri.py). Each augmentation is applied to a slab with its own probability and
draws its strength at random, from the trainer's CPU generator, so a resumed run repeats it:

* field of view ("zoom", applied first): the slab magnified in-plane by a factor uniform in
  [1, zoom_max] about a random centre, drawn from the middle half of the shifts that keep the
  window inside the slab, so mostly on the head (bilinear, the same window for every slice), as
  a scan whose field of view lies inside the head;
* contrast: a random piecewise-linear intensity map with `contrast_knots` interior knots,
  values uniform in [0.05, 1] and not sorted, so tissue order can flip as between FLAIR and
  T1; 0 stays 0 (background stays black);
* bias field: multiplication by exp(a p(y, x, z)), p a random polynomial of degree 2 in the
  normalised coordinates, a uniform in [0, bias_amplitude];
* noise: the magnitude of the slab plus complex Gaussian noise of std uniform in
  [0, noise_std] (Rician, as in a magnitude image);
* resolution: an in-plane Gaussian blur of std uniform in [0, blur_sigma] pixels.

Every augmented slab is divided by its maximum, as the preprocessing scales volumes to [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from physdiff.errors import ConfigError


@dataclass(frozen=True)
class IntensityAugment:
    contrast: float = 0.0  # probabilities per slab
    bias_field: float = 0.0
    noise: float = 0.0
    blur: float = 0.0
    zoom: float = 0.0
    contrast_knots: int = 4
    bias_amplitude: float = 0.3
    noise_std: float = 0.02
    blur_sigma: float = 1.0
    zoom_max: float = 2.0

    def __post_init__(self):
        for name in ("contrast", "bias_field", "noise", "blur", "zoom"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"prior.augment: '{name}' is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("bias_amplitude", "noise_std", "blur_sigma"):
            if getattr(self, name) < 0:
                raise ConfigError(f"prior.augment: '{name}' must be >= 0, got {getattr(self, name)}")
        if self.zoom_max < 1:
            raise ConfigError(f"prior.augment: 'zoom_max' is a magnification >= 1, got {self.zoom_max}")
        if self.contrast_knots < 1:
            raise ConfigError(f"prior.augment: 'contrast_knots' must be >= 1, got {self.contrast_knots}")

    @property
    def active(self) -> bool:
        return any((self.contrast, self.bias_field, self.noise, self.blur, self.zoom))

    def as_dict(self) -> dict:
        return asdict(self)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Augment slabs x (B, S, H, W) in [0, 1]; the random draws come from the CPU generator `gen`."""
        if not self.active:
            return x
        b, s, h, w = x.shape
        u = lambda *shape: torch.rand(shape, generator=gen)  # noqa: E731
        out = []
        for i in range(b):
            v = x[i].float()
            if self.zoom and u(1).item() < self.zoom:  # no draw when off: the other kinds' draws stay as before
                scale = 1 + (self.zoom_max - 1) * u(1).item()
                v = _zoom(v, scale, (1 - 1 / scale) * (u(2) - 0.5))  # the middle half of the shifts that stay inside
            if u(1).item() < self.contrast:
                v = _intensity_map(v, torch.cat([torch.zeros(1), 0.05 + 0.95 * u(self.contrast_knots + 1)]))
            if u(1).item() < self.bias_field:
                v = v * _bias_field((s, h, w), self.bias_amplitude * u(1).item(), torch.randn(9, generator=gen)).to(v)
            if u(1).item() < self.noise:
                std = self.noise_std * u(1).item()
                z = torch.randn((2, s, h, w), generator=gen).to(v) * std
                v = torch.sqrt((v + z[0]) ** 2 + z[1] ** 2)
            if u(1).item() < self.blur:
                v = _blur(v, self.blur_sigma * u(1).item())
            out.append(v / v.max().clamp_min(1e-6))
        return torch.stack(out).to(x.dtype)


def _zoom(v: torch.Tensor, scale: float, centre: torch.Tensor) -> torch.Tensor:
    """Every slice of v (S, H, W) magnified `scale` times about `centre` (y, x) in normalised
    coordinates [-1, 1]: output point p samples the input at centre + p / scale (bilinear)."""
    theta = torch.tensor([[1 / scale, 0.0, float(centre[1])], [0.0, 1 / scale, float(centre[0])]], dtype=v.dtype)
    grid = F.affine_grid(theta[None].expand(len(v), 2, 3), [len(v), 1, *v.shape[1:]], align_corners=False)
    return F.grid_sample(v[:, None], grid.to(v.device), mode="bilinear", padding_mode="border", align_corners=False)[:, 0]


def _intensity_map(v: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear map through (k / K, values[k]), k = 0..K, of v in [0, 1]."""
    values = values.to(v)
    k = len(values) - 1
    pos = v.clamp(0, 1) * k
    lo = pos.floor().clamp(max=k - 1).long()
    frac = pos - lo
    return values[lo] * (1 - frac) + values[lo + 1] * frac


def _bias_field(shape: tuple[int, int, int], amplitude: float, coef: torch.Tensor) -> torch.Tensor:
    """exp(amplitude * p) with p a degree-2 polynomial in coordinates in [-1, 1], scaled to max |p| = 1."""
    z, y, x = torch.meshgrid(*(torch.linspace(-1, 1, n) for n in shape), indexing="ij")
    terms = torch.stack([z, y, x, y * x, z * y, z * x, y**2 - 1 / 3, x**2 - 1 / 3, z**2 - 1 / 3])
    p = (coef[:, None, None, None] * terms).sum(0)
    return torch.exp(amplitude * p / p.abs().max().clamp_min(1e-6))


def _blur(v: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of every slice of v (S, H, W) in-plane, reflecting at the edges."""
    if sigma < 0.1:
        return v
    r = max(1, int(3 * sigma + 0.5))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=v.dtype, device=v.device) / sigma) ** 2)
    k = k / k.sum()
    y = F.pad(v[:, None], (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y[:, 0]
