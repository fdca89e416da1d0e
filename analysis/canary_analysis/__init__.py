"""canary sweep analysis: LR sensitivity, probe figures and the attention-logit early warning.

Run as ``canary-analyze report runs/SWEEP`` (installed with ``pip install -e analysis/``), or
without installing, ``analysis/canary-analyze report runs/SWEEP``. From Python or a notebook:
``open_run(dir)`` and ``open_sweep(dir)`` give xarray Datasets (and a pandas DataFrame of runs).
Modules, each with one job:

- ``dataset``: one probes.h5 as an xarray Dataset, axes from its HDF5 dimension scales;
- ``errors``: the exception types the command line turns into one-line messages;
- ``params``: non-embedding parameter count of a model config (Kaplan convention);
- ``readers``: config.ini (configparser), index.tsv and metrics.tsv (pandas);
- ``load``: a run or a sweep directory into ``Run`` records, ``open_run``, ``open_sweep``;
- ``series``: reading one probe value at a step, shared by the figures and the report;
- ``sensitivity``: Wortsman et al.'s LR sensitivity per group of the other swept keys;
- ``figures``: the PNG figures (matplotlib, Agg);
- ``early_warning``: the quadratic fit of block-0 max attention logit against model size;
- ``report``: report.md and runs.csv; ``__main__``: the command line.

Needs the Debian packages python3-numpy, python3-h5py, python3-matplotlib, python3-pandas and
python3-xarray.
"""

from .errors import AnalysisError, SensitivityUnavailable
from .load import load_sweep, open_run, open_sweep

__all__ = ["AnalysisError", "SensitivityUnavailable", "load_sweep", "open_run", "open_sweep"]
