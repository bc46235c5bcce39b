"""User-facing errors. Each message names what was wrong and the rule it broke.

The CLI prints `error: <message>` and exits 2 for any `LabError`; the pages show it in
`st.error`. Anything else is a bug and keeps its traceback.
"""


class LabError(Exception):
    """Base of every error caused by the user's input rather than by a bug."""


class ConfigError(LabError, ValueError):
    """A configuration value broke a rule."""


class CheckpointError(LabError):
    """A checkpoint is missing, corrupt, unsafe, or does not match its config."""


class DataError(LabError):
    """Training or calibration text is missing, empty, binary or too large."""


class RunError(LabError):
    """A training run or job cannot be started, resumed or changed as asked."""
