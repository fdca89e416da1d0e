"""Exceptions of the analysis package.

Contract: ``AnalysisError`` means bad input (not a sweep, an empty sweep, an unusable LR range...);
its message is one line, written for the user, and the command line prints it and exits 1.
``SensitivityUnavailable`` is the one recoverable case: the LR sensitivity cannot be computed
(optim.lr was not swept) but everything else in the report can.
"""


class AnalysisError(Exception):
    """Bad input for the analysis; str(e) is a one-line message for the user."""


class SensitivityUnavailable(AnalysisError):
    """The LR sensitivity is not computable for this sweep (the report is still written)."""
