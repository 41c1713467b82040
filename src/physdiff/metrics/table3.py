"""Table 3: generated volumes against held-out real ones, without physics (docs/method.md, "Scores").

For each partition count G (G = 1: one model over all S slices; G >= 2: G partition models whose
slabs are stacked) and each count n of generated volumes, the first n volumes of
the generate rule's set for G (`physdiff.results.Layout.generated`) are compared with all real test volumes by
- FVD-i3D: Fréchet distance of Kinetics-400 I3D logits;
- JEDi (I3D features): JEDi's MMD on the same I3D logits, labelled so, since the paper's JEDi
  uses V-JEPA features;
- FVD-VideoMAE and JEDi (V-JEPA): only where a feature network is configured, else the cell
  says which key to set.
- seam ratio (`physdiff.metrics.seams`) at the boundaries of the largest G: the mean slice
  difference across partition boundaries over the rest (real volumes give about 1), with a
  percentile bootstrap interval over volumes; the real volumes get a row of their own.
A generated set is keyed by G, or by (G, seam mode) when a G >= 2 stack was sampled both plainly
("none") and seam-aware ("overlap"). Every value carries its 95 % bootstrap interval
(bias-corrected for the feature distances, see fvd.bootstrap_ci) and both N.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from physdiff.errors import ConfigError, InputError
from physdiff.io import atomic_path
from physdiff.metrics.fvd import feature_extractor_from_config, frechet_distance, jedi, score
from physdiff.metrics.seams import partition_boundaries, seam_ratio

# (column, feature network, distance)
METRICS = (
    ("FVD-i3D", "i3d", frechet_distance),
    ("JEDi (I3D features)", "i3d", jedi),
    ("FVD-VideoMAE", "videomae", frechet_distance),
    ("JEDi (V-JEPA)", "vjepa", jedi),
)
SEAM = "seam ratio"
COLUMNS = [m for m, _, _ in METRICS] + [SEAM]
REAL = "real (held out)"


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


def setting(G: int, seam: str = "none") -> str:
    """The row label of a partition count (and seam mode), in the paper's words."""
    if G == 1:
        return "one model, all slices"
    if seam == "none":
        return f"{G} partition models, slabs stacked"
    window = {"overlap": "triangle", "plateau": "plateau"}.get(seam, seam)
    return f"{G} partition models, overlapping seams, {window} window (ours)"


def _seam_score(volumes: np.ndarray, boundaries: Sequence[int], n_boot: int, seed: int) -> tuple[float, float, float]:
    """Seam ratio of `volumes` and its 95 % percentile bootstrap interval over volumes."""
    rng = np.random.default_rng(seed)
    boots = [seam_ratio(volumes[rng.integers(0, len(volumes), len(volumes))], boundaries) for _ in range(n_boot)]
    lo, hi = np.nanpercentile(boots, [2.5, 97.5]) if n_boot else (np.nan, np.nan)
    return seam_ratio(volumes, boundaries), float(lo), float(hi)


def table3_frame(
    real: np.ndarray,
    generated: Mapping[int | tuple[int, str], np.ndarray],
    counts: Sequence[int],
    extractors: Mapping[str, Callable | str],
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """One tidy row per (setting, count, metric): value, bootstrap interval, N real, N generated.

    `generated` maps G, or (G, seam mode), to its volumes. `extractors` maps "i3d", "videomae",
    "vjepa" to a volumes -> features function, or to the "not configured ..." string, which is
    then the row's `status` and its value stays empty. Features are computed once per volume
    set; a count uses the first `count` generated volumes. The seam ratio is measured at the
    boundaries of the largest G (at least 2), for the real volumes too (setting REAL, G = 0).
    """
    sets = {(k, "none") if isinstance(k, (int, np.integer)) else (int(k[0]), str(k[1])): v for k, v in generated.items()}
    real_feats = {k: f(real) for k, f in extractors.items() if callable(f)}
    boundaries = partition_boundaries(real.shape[1], max([2] + [G for G, _ in sets]))
    ratio, lo, hi = _seam_score(real, boundaries, n_boot, seed)
    rows = [{"setting": REAL, "G": 0, "count": len(real), "metric": SEAM, "n_real": len(real), "n_gen": len(real),
             "value": ratio, "ci_lo": lo, "ci_hi": hi, "status": "ok"}]
    for (G, seam), gen in sorted(sets.items()):
        if gen.shape[1:] != real.shape[1:]:
            raise InputError(f"generated G={G} volumes are {gen.shape[1:]}, real ones {real.shape[1:]}")
        gen_feats = {k: f(gen) for k, f in extractors.items() if callable(f)}
        for count in counts:
            if count > len(gen):
                raise ConfigError(
                    f"metrics.table3_counts: {count} volumes asked for, G={G} has {len(gen)} "
                    "(raise prior.generate.n_volumes)"
                )
            ratio, lo, hi = _seam_score(gen[:count], boundaries, n_boot, seed)
            rows.append({"setting": setting(G, seam), "G": G, "count": count, "metric": SEAM, "n_real": len(real),
                         "n_gen": count, "value": ratio, "ci_lo": lo, "ci_hi": hi, "status": "ok"})
            for column, net, distance in METRICS:
                row = {"setting": setting(G, seam), "G": G, "count": count, "metric": column,
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
    return wide.reindex(columns=COLUMNS).fillna("-").reset_index()


def table3_markdown(frame: pd.DataFrame) -> str:
    """Markdown Table 3: one row per (setting, N generated); cells 'value [95 % CI]'."""
    wide = _cells(frame)
    head = ["setting", "N gen", "N real"] + COLUMNS
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in wide.itertuples(index=False):
        lines.append("| " + " | ".join([r.setting, str(r.n_gen), str(r.n_real)] + list(r[4:])) + " |")
    return (
        "# Table 3: generated vs held-out real volumes (lower is better)\n\n"
        "Cells: value [95 % bootstrap CI, bias-corrected]. JEDi (I3D features) is JEDi's MMD on "
        "I3D logits, not on V-JEPA features. Seam ratio: mean slice difference across the partition "
        "boundaries over the rest (percentile interval over volumes; real volumes give about 1).\n\n"
        + "\n".join(lines) + "\n"
    )


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


def table3_latex(frame: pd.DataFrame) -> str:
    """A LaTeX tabular of Table 3 (booktabs rules), the same cells as the Markdown."""
    wide = _cells(frame)
    head = ["Setting", "$N_\\mathrm{gen}$", "$N_\\mathrm{real}$"] + [_tex_escape(m) for m in COLUMNS]
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


def run_table3(cfg: dict, real_path, generated_paths: Mapping[int | tuple[int, str], str], i3d_checkpoint,
               out) -> pd.DataFrame:
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
        {key: load_volumes(p) for key, p in generated_paths.items()},
        counts,
        extractors,
        n_boot=int(metrics.get("bootstrap", 200)),
        seed=int(cfg.get("seed", 0)),
    )
    write_table3(frame, out["csv"], out["md"], out["tex"])
    return frame
