"""Exceptions that carry a message a user can act on.

Every error raised on bad input names the file or the config key at fault and says what was
expected, so the workflow scripts can print it and exit non-zero without a stack trace.
"""


class PhysdiffError(Exception):
    """Base class of all errors this package raises on purpose."""


class InputError(PhysdiffError, ValueError):
    """A data file is missing, corrupt, of the wrong shape, or holds NaNs."""


class ConfigError(PhysdiffError, ValueError):
    """A configuration key holds an invalid value."""


class MissingExtraError(PhysdiffError, ImportError):
    """An optional dependency (a pip extra) is needed but not installed."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the optional package '{package}', which is not installed. "
            f"Enable it with: pip install -e '.[{extra}]'"
        )
