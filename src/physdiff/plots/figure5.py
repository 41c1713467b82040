"""Figure 5: time and SSIM against reverse steps; time and peak memory per device against G."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

COLORS = {"vanilla": "tab:gray", "dart": "tab:blue", "drift": "tab:orange"}
STAGE_COLORS = ["tab:green", "tab:purple", "tab:brown"]
LABELS = {"vanilla": "vanilla prior", "dart": "DART", "drift": "DRIFT"}
LINESTYLES = ["-", "--", ":", "-."]


def figure5_frame(sweep: pd.DataFrame, cost: pd.DataFrame) -> pd.DataFrame:
    """The CSV behind the figure: the sweep's mean over volumes (with its std) and the cost rows."""
    agg = (sweep.groupby(["method", "G", "steps", "device"], as_index=False)
           .agg(seconds=("seconds", "mean"), seconds_std=("seconds", "std"), ssim=("ssim", "mean"),
                ssim_std=("ssim", "std"), peak_mem_mb=("peak_mem_mb", "max"), n_volumes=("volume", "nunique")))
    agg.insert(0, "panel", "steps")
    cost = cost.assign(panel="per device vs G", method=cost["stage"]).drop(columns="stage")
    return pd.concat([agg, cost], ignore_index=True)


def plot_figure5(frame: pd.DataFrame):
    """Four panels: (a) seconds and (b) SSIM against steps, (c) seconds and (d) memory per device against G."""
    steps = frame[frame.panel == "steps"]
    cost = frame[frame.panel != "steps"]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    ks = sorted(steps.steps.unique())
    for (method, G), grp in steps.groupby(["method", "G"]):
        style = dict(color=COLORS.get(method), linestyle=LINESTYLES[sorted(steps.G.unique()).index(G) % 4],
                     marker="o", label=f"{LABELS.get(method, method)}, G={G}")
        grp = grp.sort_values("steps")
        axes[0].plot(grp.steps, grp.seconds, **style)
        axes[1].plot(grp.steps, grp.ssim, **style)
    axes[0].set(xlabel="reverse steps", ylabel="seconds per volume", title="(a) inference time", yscale="log")
    axes[1].set(xlabel="reverse steps", ylabel="SSIM (mean over volumes)", title="(b) quality")
    axes[1].legend(fontsize=6, ncol=1)
    for ax in axes[:2]:
        ax.set_xticks(ks)
    for i, (stage, grp) in enumerate(cost.groupby("method")):
        grp, color = grp.sort_values("G"), STAGE_COLORS[i % len(STAGE_COLORS)]
        axes[2].plot(grp.G, grp.seconds, marker="s", color=color, label=stage)
        axes[3].plot(grp.G, grp.max_rss_mb, marker="s", color=color, linestyle="--", label=f"{stage}, job's peak RSS")
        if "model_mb" in grp and grp.model_mb.notna().any():
            axes[3].plot(grp.G, grp.model_mb, marker="D", color=color, label=f"{stage}, model (params + peak growth)")
    cuda = steps.dropna(subset=["peak_mem_mb"])
    if len(cuda):
        top = cuda[cuda.steps == cuda.steps.max()].groupby("G").peak_mem_mb.max()
        axes[3].plot(top.index, top.values, marker="^", color="black", label="sampling, CUDA max allocated")
    dart = steps[(steps.method == "dart") & (steps.steps == ks[-1])].sort_values("G") if ks else steps.iloc[:0]
    if len(dart):
        axes[2].plot(dart.G, dart.seconds, marker="o", color=COLORS["dart"], label=f"DART, {ks[-1]} steps")
    g_values = sorted(set(cost.G) | set(steps.G))
    axes[2].set(xlabel="partitions G", ylabel="seconds per device", title="(c) time per device", yscale="log")
    axes[3].set(xlabel="partitions G", ylabel="MB per device", title="(d) peak memory per device")
    for ax in axes[2:]:
        ax.set_xticks(g_values)
        ax.legend(fontsize=6)
    for ax in axes:
        ax.grid(alpha=0.3)
    if len(steps) and not np.isfinite(steps.ssim).all():
        fig.text(0.5, 0.01, "some SSIM values are not finite", ha="center", fontsize=7)
    fig.tight_layout()
    return fig
