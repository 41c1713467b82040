"""Figures 3 and 4: per method a slice (MRI) or a phase projection (4D-STEM) beside the truth."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def panel_image(modality: str, volume: np.ndarray, *, sigma: float | None = None, slice_index: int | None = None):
    """What one panel shows: the middle slice of an MRI volume, or the phase projection sum_s sigma V_s."""
    volume = np.asarray(volume)
    if modality == "mri":
        return volume[volume.shape[0] // 2 if slice_index is None else slice_index]
    return sigma * volume.sum(0)


def plot_reconstructions(rows: list[dict], *, title: str):
    """One row per case: {"label", "modality", "truth", "measured", "measured_label", "methods": [(name, image, ssim)]}.

    Every image of a row shares the grey scale of its ground truth; titles carry the SSIM
    that the metrics row of that reconstruction recorded.
    """
    n_cols = 2 + max(len(r["methods"]) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.6 * n_cols, 2.4 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        truth = np.asarray(row["truth"])
        lo, hi = float(truth.min()), float(truth.max())
        cmap = "gray" if row["modality"] == "mri" else "magma"
        panels = [("ground truth", truth, None, (lo, hi)),
                  (row["measured_label"], row["measured"], None, (None, None))]
        panels += [(name, img, ssim, (lo, hi)) for name, img, ssim in row["methods"]]
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(panels):
                ax.axis("off")
                continue
            name, img, ssim, (vmin, vmax) = panels[c]
            ax.imshow(np.asarray(img).T, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower")
            ax.set_title(name if ssim is None else f"{name}\nSSIM {ssim:.3f}", fontsize=7)
            if c == 0:
                ax.set_ylabel(row["label"], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
