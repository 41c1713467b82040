"""The dataset overview figure: MRI slices (training and OOD) and 4D-STEM samples."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _show(ax, image, title, cmap="gray", log=False):
    image = np.log1p(image / image.max() * 1e4) if log else image
    ax.imshow(np.asarray(image).T, cmap=cmap, origin="lower")  # arrays are (x, y)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def _slice_indices(n: int, k: int) -> list[int]:
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


def plot_datasets(
    mri_volume: np.ndarray,
    ood_volume: np.ndarray | None,
    stem_samples: Sequence[dict],
    *,
    n_columns: int = 6,
):
    """One row of MRI slices (training, then OOD) and one row per 4D-STEM sample.

    A STEM row shows potential slices, the phase projection sigma * sum_s V_s, the diffraction
    pattern at the centre scan position (log scale) and the bright-field image.
    """
    fig, axes = plt.subplots(1 + len(stem_samples), n_columns, figsize=(2 * n_columns, 2.1 * (1 + len(stem_samples))))
    axes = np.atleast_2d(axes)
    for ax in axes.ravel():
        ax.set_axis_off()

    n_ood = 2 if ood_volume is not None else 0
    mri_idx = _slice_indices(mri_volume.shape[0], n_columns - n_ood)
    for ax, s in zip(axes[0], mri_idx):
        _show(ax, mri_volume[s], f"MRI train, slice {s}")
    if ood_volume is not None:
        for ax, s in zip(axes[0][len(mri_idx):], _slice_indices(ood_volume.shape[0], n_ood)):
            _show(ax, ood_volume[s], f"MRI OOD (roots), slice {s}")

    for row, sample in zip(axes[1:], stem_samples):
        name = f"{sample['name']} [{sample['zone_axis']}]"
        potential = sample["potential"]
        n_pot = n_columns - 3
        for ax, s in zip(row, _slice_indices(potential.shape[0], n_pot)):
            _show(ax, potential[s], f"{name} V slice {s}", cmap="magma")
        _show(row[n_pot], sample["sigma"] * potential.sum(0), f"{name} phase (rad)", cmap="magma")
        nx, ny = sample["intensities"].shape[:2]
        _show(row[n_pot + 1], sample["intensities"][nx // 2, ny // 2], "diffraction (log)", cmap="viridis", log=True)
        _show(row[n_pot + 2], sample["bright_field"], "bright field", cmap="gray")
    fig.tight_layout()
    return fig
