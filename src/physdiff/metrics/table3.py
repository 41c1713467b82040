"""Table 3: generated volumes against held-out real ones, without physics (SPEC 7).

For each partition count G (G = 1: one model over all S slices; G >= 2: G partition models whose
slabs are stacked) and each count n of generated volumes, the first n volumes of
`results/generated/{modality}/G{G}.npy` are compared with all real test volumes by
- FVD-i3D: Fréchet distance of Kinetics-400 I3D logits;
- JEDi (I3D features): JEDi's MMD on the same I3D logits, labelled so, since the paper's JEDi
  uses V-JEPA features;
- FVD-VideoMAE and JEDi (V-JEPA): only where a feature network is configured, else the cell
  says which key to set.
Every value carries its 95 % bias-corrected bootstrap interval (see fvd.bootstrap_ci) and both N.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from physdiff.errors import ConfigError, InputError
from physdiff.io import atomic_path
from physdiff.metrics.fvd import feature_extractor_from_config, frechet_distance, jedi, score

# (column, feature network, distance)
METRICS = (
    ("FVD-i3D", "i3d", frechet_distance),
    ("JEDi (I3D features)", "i3d", jedi),
    ("FVD-VideoMAE", "videomae", frechet_distance),
    ("JEDi (V-JEPA)", "vjepa", jedi),
)


def load_volumes(path) -> np.ndarray:
    """Read (N, S, H, W) volumes from a .npy file, naming the file on any problem."""
    try:
        vols = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read volumes ({exc})") from None
    if vols.ndim != 4 or len(vols) == 0:
        raise InputError(f"{path}: expected (N, S, H, W) volumes, got shape {vols.shape}")
    if not np.isfinite(vols).all():
        raise InputError(f"{path}: holds NaN or inf values")
    return vols


def setting(G: int) -> str:
    """The row label of a partition count, in the paper's words."""
    return "one model, all slices" if G == 1 else f"{G} partition models, slabs stacked"


def table3_frame(
    real: np.ndarray,
    generated: Mapping[int, np.ndarray],
    counts: Sequence[int],
    extractors: Mapping[str, Callable | str],
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """One tidy row per (G, count, metric): value, bootstrap interval, N real, N generated.

    `extractors` maps "i3d", "videomae", "vjepa" to a volumes -> features function, or to the
    "not configured ..." string, which is then the row's `status` and its value stays empty.
    Features are computed once per volume set; a count uses the first `count` generated volumes.
    """
    real_feats = {k: f(real) for k, f in extractors.items() if callable(f)}
    rows = []
    for G, gen in sorted(generated.items()):
        if gen.shape[1:] != real.shape[1:]:
            raise InputError(f"generated G={G} volumes are {gen.shape[1:]}, real ones {real.shape[1:]}")
        gen_feats = {k: f(gen) for k, f in extractors.items() if callable(f)}
        for count in counts:
            if count > len(gen):
                raise ConfigError(
                    f"metrics.table3_counts: {count} volumes asked for, G={G} has {len(gen)} "
                    "(raise prior.generate.n_volumes)"
                )
            for column, net, distance in METRICS:
                row = {"setting": setting(G), "G": G, "count": count, "metric": column,
                       "n_real": len(real), "n_gen": count}
                if callable(extractors.get(net)):
                    s = score(distance, real_feats[net], gen_feats[net][:count], n_boot, seed)
                    row.update(value=s.value, ci_lo=s.lo, ci_hi=s.hi, status="ok")
                else:
                    row.update(value=np.nan, ci_lo=np.nan, ci_hi=np.nan, status=str(extractors.get(net)))
                rows.append(row)
    return pd.DataFrame(rows)


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Pivot to rows (setting, count) x metric columns of 'value [lo, hi]' or the status text."""
    text = [
        f"{r.value:.2f} [{r.ci_lo:.2f}, {r.ci_hi:.2f}]" if r.status == "ok" else r.status
        for r in frame.itertuples()
    ]
    wide = frame.assign(cell=text).pivot_table(
        index=["G", "setting", "n_gen", "n_real"], columns="metric", values="cell", aggfunc="first"
    )
    return wide[[m for m, _, _ in METRICS]].reset_index()


def table3_markdown(frame: pd.DataFrame) -> str:
    """Markdown Table 3: one row per (setting, N generated); cells 'value [95 % CI]'."""
    wide = _cells(frame)
    head = ["setting", "N gen", "N real"] + [m for m, _, _ in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in wide.itertuples(index=False):
        lines.append("| " + " | ".join([r.setting, str(r.n_gen), str(r.n_real)] + list(r[4:])) + " |")
    return (
        "# Table 3: generated vs held-out real volumes (lower is better)\n\n"
        "Cells: value [95 % bootstrap CI, bias-corrected]. JEDi (I3D features) is JEDi's MMD on "
        "I3D logits, not on V-JEPA features.\n\n" + "\n".join(lines) + "\n"
    )


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


def table3_latex(frame: pd.DataFrame) -> str:
    """A LaTeX tabular of Table 3 (booktabs rules), the same cells as the Markdown."""
    wide = _cells(frame)
    head = ["Setting", "$N_\\mathrm{gen}$", "$N_\\mathrm{real}$"] + [_tex_escape(m) for m, _, _ in METRICS]
    body = [
        " & ".join([_tex_escape(r.setting), str(r.n_gen), str(r.n_real)] + [_tex_escape(c) for c in r[4:]])
        + r" \\"
        for r in wide.itertuples(index=False)
    ]
    return "\n".join(
        [r"\begin{tabular}{ll" + "r" * (len(head) - 2) + "}", r"\toprule", " & ".join(head) + r" \\",
         r"\midrule", *body, r"\bottomrule", r"\end{tabular}", ""]
    )


def write_table3(frame: pd.DataFrame, csv, md, tex) -> None:
    """Write the tidy CSV, the Markdown and the LaTeX table, each atomically."""
    with atomic_path(csv) as tmp:
        frame.to_csv(tmp, index=False)
    for path, text in ((md, table3_markdown(frame)), (tex, table3_latex(frame))):
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text)


def run_table3(cfg: dict, real_path, generated_paths: Mapping[int, str], i3d_checkpoint, out) -> pd.DataFrame:
    """Load volumes and feature networks as configured, score them, write `out` (csv, md, tex)."""
    metrics = cfg.get("metrics") or {}
    counts = [int(c) for c in metrics.get("table3_counts", [])]
    if not counts or min(counts) < 2:
        raise ConfigError(f"metrics.table3_counts: need counts of at least 2 volumes, got {counts}")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    extractors = {
        net: feature_extractor_from_config(cfg, net, default_i3d=i3d_checkpoint, device=device)
        for net in ("i3d", "videomae", "vjepa")
    }
    frame = table3_frame(
        load_volumes(real_path),
        {int(G): load_volumes(p) for G, p in generated_paths.items()},
        counts,
        extractors,
        n_boot=int(metrics.get("bootstrap", 200)),
        seed=int(cfg.get("seed", 0)),
    )
    write_table3(frame, out["csv"], out["md"], out["tex"])
    return frame
