"""Errors pixelwise raises on bad input.

Each carries one line that names the file or key at fault and the problem; the CLI prints that line and
exits non-zero instead of showing a traceback.
"""


class PixelwiseError(Exception):
    """Base of every error the CLI reports as one clear line."""


class DataError(PixelwiseError):
    """A dataset, image or mask on disk is missing, unreadable or inconsistent."""


class ConfigError(PixelwiseError):
    """A config key does not exist, has the wrong type or an invalid value."""


class ModelError(PixelwiseError):
    """A model name, model directory or checkpoint is unknown or broken."""


class TrainingError(PixelwiseError):
    """Training cannot go on (e.g. the loss became NaN or Inf)."""
