"""Generated volumes beside real ones: a row per volume, a column per slice."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_generated(real: np.ndarray, generated: dict[str, np.ndarray], *, modality: str,
                   per_group: int = 2, n_columns: int = 8):
    """Rows: `per_group` real volumes, then `per_group` volumes of each generated group.

    Columns are evenly spaced slices, so a seam between stacked partitions shows as a jump
    between neighbouring columns. All panels share the [0, 1] grey scale.
    """
    groups = [("real", real)] + list(generated.items())
    n_slices = real.shape[1]
    cols = sorted({int(round(i)) for i in np.linspace(0, n_slices - 1, min(n_columns, n_slices))})
    rows = [(name, vol) for name, vols in groups for vol in vols[:per_group]]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.3 * len(cols), 1.4 * len(rows)), squeeze=False)
    cmap = "gray" if modality == "mri" else "magma"
    for r, (name, vol) in enumerate(rows):
        for c, s in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(np.asarray(vol[s]).T, cmap=cmap, vmin=0, vmax=1, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            if r == 0:
                ax.set_title(f"slice {s}", fontsize=8)
    fig.suptitle(f"{modality}: real (top) and generated volumes", fontsize=9)
    fig.tight_layout()
    return fig
