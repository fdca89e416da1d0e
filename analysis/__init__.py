"""canary sweep analysis: LR sensitivity, probe figures and the attention-logit early warning.

Run as ``/usr/bin/python3 -m analysis report runs/SWEEP`` (or ``analysis/canary-analyze``).
Modules, each with one job:

- ``errors``: the exception types the command line turns into one-line messages;
- ``params``: non-embedding parameter count of a model config (Kaplan convention);
- ``load``: a sweep directory (index.tsv + run directories) into ``Run`` records;
- ``series``: reading one probe value at a step, shared by the figures and the report;
- ``sensitivity``: Wortsman et al.'s LR sensitivity per group of the other swept keys;
- ``figures``: the PNG figures (matplotlib, Agg);
- ``early_warning``: the quadratic fit of block-0 max attention logit against model size;
- ``report``: report.md and runs.csv; ``__main__``: the command line.

Only the Debian packages python3-numpy, python3-h5py and python3-matplotlib are needed.
"""

from .errors import AnalysisError, SensitivityUnavailable

__all__ = ["AnalysisError", "SensitivityUnavailable"]
