"""The training loss curve as a CSV table and a PNG figure."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from physdiff.io import atomic_path


def write_loss_curve(history: Sequence[tuple[int, float]], csv_path: str | os.PathLike,
                     png_path: str | os.PathLike, *, title: str = "diffusion prior training") -> None:
    """Write (step, loss) rows to CSV and plot them with a moving average (window ~ steps/20)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = np.asarray(history, dtype=np.float64).reshape(-1, 2)
    with atomic_path(csv_path) as tmp:
        np.savetxt(tmp, arr, delimiter=",", header="step,loss", comments="", fmt=["%d", "%.6g"])
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    if len(arr):
        ax.plot(arr[:, 0], arr[:, 1], lw=0.5, alpha=0.4, label="per step")
        win = max(1, len(arr) // 20)
        if win > 1:
            smooth = np.convolve(arr[:, 1], np.ones(win) / win, mode="valid")
            ax.plot(arr[win - 1:, 0], smooth, lw=1.5, label=f"mean of {win}")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("L1 eps loss")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
