"""Domain errors. The library raises these; only the CLI turns them into a line and an exit code."""


class ReportgenError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` is what the CLI returns."""

    exit_code = 2


class UsageError(ReportgenError):
    """A flag or config value is malformed or out of range."""


class UnknownModelError(ReportgenError):
    """The model name is not a timm model."""


class WeightsError(ReportgenError):
    """The weights could not be found, downloaded or mapped onto the model."""


class UnknownLayerError(ReportgenError):
    """A layer selector matched no layer of the model."""


class UnknownUnitError(ReportgenError):
    """A unit (channel) id is out of range for its layer."""


class OutputDirError(ReportgenError):
    """The output folder cannot be used (a file, unwritable, or someone else's)."""


class StoreError(ReportgenError):
    """Stored results are missing or unusable (e.g. ``reportgen site`` before any build)."""
