"""The pictures the `physdiff` command writes beside a reconstruction."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def slice_indices(n: int, k: int) -> list[int]:
    """At most `k` slice indices spread evenly over 0..n-1, ends included."""
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(k, n))})


def mri_slices_figure(rows: dict[str, np.ndarray], *, title: str, first_slice: int = 0, n: int = 4):
    """A few slices of each (S, H, W) volume in `rows` ({label: volume}, one row each), on one grey scale.

    Slices are numbered from `first_slice` (the slab's offset in the scan)."""
    volumes = [np.asarray(v, np.float32) for v in rows.values()]
    picks = slice_indices(volumes[0].shape[0], n)
    vmax = max(float(v.max()) for v in volumes) or 1.0
    fig, axes = plt.subplots(len(rows), len(picks), figsize=(2.0 * len(picks), 2.1 * len(rows)), squeeze=False)
    for r, (label, volume) in enumerate(zip(rows, volumes)):
        for c, s in enumerate(picks):
            ax = axes[r, c]
            ax.imshow(volume[s].T, cmap="gray", vmin=0.0, vmax=vmax, origin="lower")  # arrays are (x, y)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"slice {first_slice + s}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def phase_figure(phase: np.ndarray, bright_field: np.ndarray, *, title: str, sampling: tuple[float, float]):
    """The projected phase sum_s sigma V_s (rad) of a reconstruction beside the measured bright field."""
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.3))
    extent = (0, phase.shape[0] * sampling[0], 0, phase.shape[1] * sampling[1])
    shown = axes[0].imshow(np.asarray(phase).T, cmap="magma", origin="lower", extent=extent)
    axes[0].set_title("phase projection (rad)", fontsize=8)
    axes[0].set_xlabel("Å", fontsize=8)
    fig.colorbar(shown, ax=axes[0], fraction=0.046)
    axes[1].imshow(np.asarray(bright_field).T, cmap="gray", origin="lower")
    axes[1].set_title("measured bright field (scan)", fontsize=8)
    axes[1].set_xticks([])
    axes[1].set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
