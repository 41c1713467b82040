"""The `physdiff` command: reconstruct your own MRI scan or measured 4D-STEM data, and see what a run holds."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from physdiff.cli.common import Formatter
from physdiff.errors import PhysdiffError

DESCRIPTION = """\
physdiff: physics-guided diffusion priors (DART, DRIFT) and classical baselines for multi-slice MRI
and multislice 4D-STEM, on your own data.

The prior methods use what a finished run of the pipeline made (`snakemake --cores all`; its
results/ folder: trained partition models, tuned settings, DRIFT's pools); the baselines need
only the package. Every subcommand has its own manual: physdiff SUBCOMMAND --help.

A bad input file (missing, unreadable, the wrong shape, NaNs, an unknown YAML key, an untrusted
checkpoint) stops the command with one line naming the file and what was expected, exit status 1,
and no output written.
"""

EPILOG = """\
examples:
  physdiff info results
  physdiff mri scan.nii.gz --out recon.nii.gz --method dart
  physdiff stem data.npy --metadata probe.yaml --out potential.npy --method sparse
"""


def parser() -> argparse.ArgumentParser:
    from physdiff.cli import info, mri, stem

    top = argparse.ArgumentParser(prog="physdiff", description=DESCRIPTION, epilog=EPILOG, formatter_class=Formatter)
    top.add_argument("--threads", type=int, default=None,
                     help="torch and BLAS threads (default: every core; 1 when sharing the machine)")
    sub = top.add_subparsers(title="subcommands", dest="command", required=True, metavar="SUBCOMMAND")
    for module in (mri, stem, info):
        module.add_parser(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; 0 on success, 1 with a one-line message on a bad input file or setting."""
    args = parser().parse_args(argv)
    if args.threads:
        from physdiff.workflow import set_threads

        set_threads(args.threads)
    try:
        args.run(args)
    except PhysdiffError as err:
        print(f"physdiff {args.command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # writing an output: a missing folder, no permission, a full disk
        print(f"physdiff {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
