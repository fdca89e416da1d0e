"""Command line: ``canary-analyze report SWEEP [options]`` and ``canary-analyze spikes DIR
[--out FILE]`` (``python3 -m canary_analysis``).

Contract: exit 0 after writing the report (3 when some runs' data was incomplete and skipped,
each named on stderr; launch/demo accepts 3); on bad input (``AnalysisError``, a bad option,
an unknown --grad-matrix name, an unwritable output directory) print one line
"canary-analyze: error: ..." to stderr and exit 1 (2 for a malformed command line). A sweep
without optim.lr swept is reported, not an error.
"""

import argparse
import os
import sys

from .errors import AnalysisError
from .sensitivity import DEFAULT_RANGE

PROG = "canary-analyze"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be > 0")
    return v


def _nonneg_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be >= 0")
    return v


EXIT_CODES = """exit codes:
  0  done
  1  bad input (not a sweep or run directory, an unusable option value, an unwritable
     output): one line on stderr
  2  a malformed command line
  3  report only: the report was written, but some runs were incomplete (crashed, killed,
     missing or corrupt files) and their missing data was skipped; each is named on stderr"""


def make_parser():
    p = _Parser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Analysis of canary runs: 'report' takes a sweep directory ('canary "
                            "sweep'),\n'spikes' a run directory ('canary train') or a sweep "
                            "directory.",
                epilog=EXIT_CODES)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser(
        "report", help="LR sensitivity, figures, early warning -> report.md, runs.csv",
        description="Writes report.md, runs.csv and the figures (PNG) for the sweep in "
                    "SWEEP (a directory made by 'canary sweep': index.tsv and run "
                    "directories). Exits 3 when the report was written but some runs were "
                    "incomplete and their missing data was skipped (each named on stderr); "
                    "1 on bad input; 2 on a malformed command line.")
    r.add_argument("sweep", metavar="SWEEP", help="sweep directory (runs/NAME)")
    r.add_argument("--lr-range", nargs=2, type=_positive_float, metavar=("A", "B"),
                   default=list(DEFAULT_RANGE),
                   help="LR range of the sensitivity grid (default 3e-4 3e-1, Wortsman et al.)")
    r.add_argument("--logit-step", type=_nonneg_float, metavar="N", default=None,
                   help="step at which the block-0 max attention logit is read for the "
                        "logit-vs-LR figure and the early warning (default min(2000, last "
                        "probe step))")
    r.add_argument("--out", metavar="DIR", default=None,
                   help="output directory (default SWEEP/report)")
    r.add_argument("--next-factor", type=_positive_float, default=2.0, metavar="F",
                   help="early warning: predict the size F x the largest (default 2)")
    r.add_argument("--grad-matrix", action="append", metavar="NAME", default=None,
                   help="per-block tensor for the gradient-RMS figure, e.g. mlp.w1 "
                        "(default), attn.wq; repeatable; a name no run has is an error that "
                        "lists the valid ones")
    s = sub.add_parser(
        "spikes", help="spike and threshold events, their replays and counterfactuals",
        description="Lists the spike, threshold and non-finite events of a run or a sweep, "
                    "whether each was replayed ('canary replay'), and each replay's tables: "
                    "the bitwise check against the run, the counterfactual branches, which "
                    "tensor's gradient or update RMS moved first, and the worst sequences of "
                    "the batch. Markdown on stdout, or into --out.")
    s.add_argument("dir", metavar="DIR", help="a run directory or a sweep directory")
    s.add_argument("--out", metavar="FILE", default=None, help="write the markdown here")
    return p


def _spikes(args):
    from .spikes import render
    base = os.path.dirname(os.path.abspath(args.out)) if args.out else None
    text = render(args.dir, base)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


def main(argv=None):
    args = make_parser().parse_args(argv)
    from .report import build_report
    try:
        if args.command == "spikes":
            return _spikes(args)
        rep = build_report(args.sweep, args.out, tuple(args.lr_range), args.logit_step,
                           args.next_factor, tuple(args.grad_matrix or ("mlp.w1",)))
    except AnalysisError as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 1
    except OSError as e:
        sys.stderr.write(f"{PROG}: error: {e.filename or ''}: {e.strerror or e}\n")
        return 1
    # 3: the report is written, but some runs' data was incomplete and skipped (listed above)
    return 3 if getattr(rep, "skipped", None) else 0


def cli():
    """The installed ``canary-analyze`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
