"""The training loss curve, with the validation loss where there is one, as CSV and PNG."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from physdiff.io import atomic_path


def write_loss_curve(history: Sequence[tuple[int, float]], csv_path: str | os.PathLike,
                     png_path: str | os.PathLike, *, title: str = "diffusion prior training",
                     val_history: Sequence[tuple] = (), val_timesteps: Sequence[int] = ()) -> None:
    """Write (step, loss) rows to CSV and plot them with a moving average (window ~ steps/20).

    `val_history` rows (step, mean, error at each of `val_timesteps`) add the columns val_loss
    and val_t{t}, empty (NaN) at steps without a validation, and a line to the figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = np.asarray(history, dtype=np.float64).reshape(-1, 2)
    header, table = ["step", "loss"], arr
    val = np.asarray(val_history, dtype=np.float64).reshape(len(val_history), -1) if len(val_history) else np.zeros((0, 2))
    if len(val):
        header += ["val_loss"] + [f"val_t{t}" for t in val_timesteps]
        extra = np.full((len(arr), val.shape[1] - 1), np.nan)
        row = {int(s): i for i, s in enumerate(arr[:, 0])}
        for v in val:
            if int(v[0]) in row:
                extra[row[int(v[0])]] = v[1:]
        table = np.hstack([arr, extra])
    with atomic_path(csv_path) as tmp:
        np.savetxt(tmp, table, delimiter=",", header=",".join(header), comments="",
                   fmt=["%d"] + ["%.6g"] * (table.shape[1] - 1))
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    if len(arr):
        ax.plot(arr[:, 0], arr[:, 1], lw=0.5, alpha=0.4, label="per step")
        win = max(1, len(arr) // 20)
        if win > 1:
            smooth = np.convolve(arr[:, 1], np.ones(win) / win, mode="valid")
            ax.plot(arr[win - 1:, 0], smooth, lw=1.5, label=f"mean of {win}")
    if len(val):
        ts = ", ".join(str(t) for t in val_timesteps)
        ax.plot(val[:, 0], val[:, 1], "o-", lw=1.5, ms=3, color="k", label=f"validation, EMA (t = {ts})")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("L1 eps loss")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
