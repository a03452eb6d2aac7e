"""Errors that mean "the user asked for something we cannot do".

Trainers print these as one line and exit non-zero instead of a traceback.
"""


class UserError(Exception):
  """Base class: bad config, missing data, unreadable checkpoint, divergence."""


class ConfigError(UserError, ValueError):
  """A config key or value is invalid."""


class CheckpointError(UserError, RuntimeError):
  """A checkpoint cannot be read or does not match the model."""


class NonFiniteError(UserError, FloatingPointError):
  """A training metric became NaN or Inf."""
