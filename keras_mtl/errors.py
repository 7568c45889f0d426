"""User-facing errors.

Every error that a user can cause (a bad config, a bad data file, a bad
request) is raised as a subclass of `KerasMTLError` with a message that names
the file, line or field. The CLI prints these without a traceback: one
`keras-mtl <command>: error: ...` line per line of the message (so a message
holds one problem per line, never a multi-line dump), and exits with status 2.
"""


class KerasMTLError(Exception):
    """Base class of the errors keras-mtl reports to the user."""


class ConfigError(KerasMTLError):
    """The experiment config is invalid (message names file and field path)."""


class DataError(KerasMTLError):
    """A data file cannot be read or parsed (message names file:line)."""


class ModelError(KerasMTLError):
    """A work dir or model directory is missing or unusable."""


class ServingError(KerasMTLError):
    """A serving request or serving setup is invalid."""
