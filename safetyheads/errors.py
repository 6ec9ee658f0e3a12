"""Errors that carry a one-line message telling the user what to fix.

The CLI prints ``safetyheads: error: <message>`` for these and exits 2; anything else is
printed the same way, named by its type, with the traceback only under ``--debug`` (or
``SAFETYHEADS_DEBUG=1``).
"""


class SafetyheadsError(Exception):
    """Base class: a user-facing problem with the input, not a bug."""


class HeadError(SafetyheadsError, ValueError):
    """A head reference that cannot be parsed or does not exist in the model."""


class UnsupportedArchitectureError(SafetyheadsError, ValueError):
    """The model's family is not in the architecture table."""


class AblationError(SafetyheadsError, ValueError):
    """An ablation spec that is malformed or cannot be applied."""


class ModelLoadError(SafetyheadsError, OSError):
    """Weights or tokenizer that cannot be found or safely loaded."""


class ClassifierWeightsMissing(ModelLoadError):
    """A model judge (a harm classifier) whose weights are not on this machine while downloads are off."""


class DataError(SafetyheadsError, ValueError):
    """A prompt file that is missing, malformed or empty."""


class ResultsError(SafetyheadsError, ValueError):
    """A results file that cannot be resumed or written."""


class JudgeError(SafetyheadsError, ValueError):
    """A judge name, setting or input that cannot be used (one line, exit status 2 in the CLI)."""
