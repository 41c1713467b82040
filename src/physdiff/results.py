"""Where a run keeps what it makes: the one place that knows the layout of `results/`.

Every path below is relative to a run's results folder (`results/` by default). The workflow's
rules write these files; scripts, examples, benchmarks and the `physdiff` command read them
through a :class:`Layout`, so that no copy of the layout can drift from the rules'.

>>> lay = Layout("results")
>>> lay.prior_model("mri", G=2, g=1)
PosixPath('results/prior/mri/G2/g1/model.pt')
>>> lay.tuning("mri", "dart", mask="gaussian_R4")
PosixPath('results/recon/mri/tuning/gaussian_R4/dart.json')
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from physdiff.errors import ConfigError

MODALITIES = ("mri", "stem")
#: the mask whose tuned settings the paper's tables use when none is named
DEFAULT_MRI_MASK = "gaussian_R4"
#: 4D-STEM measures every scan position; its prior methods' settings live under this "mask"
STEM_MASK = "full"


def _modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ConfigError(f"modality: expected one of {MODALITIES}, got {modality!r}")
    return modality


@dataclass(frozen=True)
class Layout:
    """Paths of one run's outputs under `root`."""

    root: Path = Path("results")

    def __init__(self, root: str | Path = "results"):
        object.__setattr__(self, "root", Path(root))

    # --- data -----------------------------------------------------------------------------
    def mri_split(self, split: str) -> Path:
        """Synthetic FLAIR volumes of one split (train, val, test): (n, slices, H, W) .npy."""
        return self.root / "data" / "mri" / "brats" / f"{split}.npy"

    def mri_subjects(self) -> Path:
        return self.root / "data" / "mri" / "brats" / "subjects.json"

    def roots(self) -> Path:
        """The out-of-distribution plant-root volumes."""
        return self.root / "data" / "mri" / "roots" / "ood.npy"

    def mri_mask(self, mask: str) -> Path:
        """A sampling mask, named `<kind>_R<rate>` (for example gaussian_R4)."""
        return self.root / "data" / "mri" / "masks" / f"{mask}.npy"

    def stem_sample(self, split: str, sample: str) -> Path:
        """One simulated 4D-STEM sample (val, test or ood split)."""
        return self.root / "data" / "stem" / split / f"{sample}.npz"

    def stem_samples(self, split: str) -> list[Path]:
        """The 4D-STEM sample files of one split that exist, sorted by name."""
        return sorted(self.stem_sample(split, "*").parent.glob("*.npz"))

    def stem_structure(self, name: str) -> Path:
        return self.root / "data" / "stem" / "structures" / f"{name}.cif"

    def stem_scale(self) -> Path:
        """The potential scaling that maps 4D-STEM slices to the prior's range."""
        return self.root / "prior" / "stem" / "scale.json"

    def stem_prior_data(self, split: str) -> Path:
        """The 4D-STEM potentials the prior trains (train) or is validated (val) on, in its units."""
        return self.root / "prior" / "stem" / f"{split}.npy"

    # --- priors ---------------------------------------------------------------------------
    def prior_dir(self, modality: str, G: int, g: int) -> Path:
        return self.root / "prior" / _modality(modality) / f"G{int(G)}" / f"g{int(g)}"

    def prior_model(self, modality: str, G: int, g: int) -> Path:
        """The trained partition model g of G (0 <= g < G)."""
        return self.prior_dir(modality, G, g) / "model.pt"

    def prior_models(self, modality: str, G: int) -> list[Path]:
        """All G partition models, in slice order."""
        return [self.prior_model(modality, G, g) for g in range(int(G))]

    def checkpoint(self, modality: str, G: int, g: int) -> Path:
        return self.root / "checkpoints" / _modality(modality) / f"G{int(G)}" / f"g{int(g)}.pt"

    def generated(self, modality: str, G: int) -> Path:
        return self.root / "generated" / _modality(modality) / f"G{int(G)}.npy"

    def candidates(self, modality: str) -> Path:
        """DRIFT's pool of unconditional samples."""
        return self.root / "recon" / _modality(modality) / "drift" / "candidates.npy"

    # --- tuning and reconstructions -------------------------------------------------------
    def tuning(self, modality: str, method: str, mask: str | None = None) -> Path:
        """The settings tuned for `method` on validation: per MRI mask (default gaussian_R4),
        under "full" for DART and DRIFT on 4D-STEM, directly under tuning/ for 4D-STEM baselines."""
        base = self.root / "recon" / _modality(modality) / "tuning"
        if modality == "mri":
            return base / (mask or DEFAULT_MRI_MASK) / f"{method}.json"
        if method in ("dart", "drift"):
            return base / STEM_MASK / f"{method}.json"
        return base / f"{method}.json"

    def recon(self, modality: str, group: str, method: str, sample: str, *, mask: str | None = None,
              suffix: str = ".npy") -> Path:
        """One reconstruction. MRI: `group` is the dataset (brats, roots) and `mask` is required;
        4D-STEM: `group` is the split (test, ood). `suffix` .json holds its metrics row."""
        if _modality(modality) == "mri":
            if not mask:
                raise ConfigError("recon: an MRI reconstruction needs its mask (for example gaussian_R4)")
            return self.root / "recon" / "mri" / group / mask / method / f"{sample}{suffix}"
        return self.root / "recon" / "stem" / group / method / f"{sample}{suffix}"

    def metrics_rows(self) -> list[Path]:
        """Every reconstruction's metrics row written so far (tuning files left out), sorted."""
        recon = self.root / "recon"
        return sorted(p for p in recon.rglob("*.json") if "tuning" not in p.relative_to(recon).parts)

    # --- tables and figures ---------------------------------------------------------------
    def table(self, name: str, ext: str = "md") -> Path:
        """table1, table2, table3 or baselines, as md, csv or tex."""
        return self.root / "tables" / f"{name}.{ext}"

    def figure(self, name: str) -> Path:
        return self.root / "figures" / f"{name}.png"

    # --- what a run holds (for `physdiff info`) -------------------------------------------
    def trained_partitions(self, modality: str) -> list[int]:
        """The G (ascending) for which at least one partition model of `modality` exists."""
        base = self.root / "prior" / _modality(modality)
        found = {int(d.name[1:]) for d in base.glob("G*") if d.name[1:].isdigit() and any(d.glob("g*/model.pt"))}
        return sorted(found)

    def tuning_files(self, modality: str) -> list[tuple[str | None, str, Path]]:
        """(mask, method, path) of every tuning file of `modality` present, sorted; mask is None for
        the 4D-STEM baselines, which are tuned once (`tuning`)."""
        base = self.root / "recon" / _modality(modality) / "tuning"
        found = [(None if p.parent == base else p.parent.name, p.stem, p) for p in base.glob("**/*.json")]
        return sorted(found, key=lambda item: (item[0] or "", item[1]))

    def tables(self) -> list[Path]:
        """Every table file present, sorted by name."""
        return sorted(p for p in (self.root / "tables").glob("*.*") if p.is_file())

    def figures(self) -> list[Path]:
        """Every figure (.png) present, sorted by name."""
        return sorted((self.root / "figures").glob("*.png"))
