"""Helpers the command-line tools share: argparse types, backend choice, --json output."""
import argparse
import json
import os
import sys

import numpy as np

from .. import available_backends
from .._io import atomic_write, check_writable


def int_at_least(low, name):
    """An argparse type for integers >= `low`; argparse names `name` when the text is no integer."""
    def parse(text):
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text}")
        return value
    parse.__name__ = name
    return parse


def name_list(choices, name):
    """An argparse type for a comma-separated list of names from `choices`, in the order given."""
    def parse(text):
        names = [item.strip().lower() for item in text.split(",") if item.strip()]
        if not names or any(item not in choices for item in names):
            raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(choices)}, got {text!r}")
        return list(dict.fromkeys(names))
    parse.__name__ = name
    return parse


positive_int = int_at_least(1, "positive_int")
non_negative_int = int_at_least(0, "non_negative_int")


def positive_float(text):
    """argparse type: a finite number > 0."""
    value = float(text)
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_backend_arguments(parser, seed_help):
    """--backend, --seed, --json, --quiet: the options both training commands share."""
    parser.add_argument(
        "--backend", choices=("auto", "cython", "reference"), default="auto",
        help="cell kernels: 'cython' (compiled), 'reference' (pure NumPy) or 'auto' (cython when "
             "built, else reference with a note) (default: %(default)s)",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help=f"{seed_help} (default: %(default)s)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--quiet", action="store_true", help="no progress output on stderr")


def choose_backend(requested, command):
    """The concrete backend for `requested`, or None after printing why it cannot run."""
    available = available_backends()
    if requested == "auto":
        if "cython" in available:
            return "cython"
        # After `pip install .`, running from the source tree imports the uncompiled copy there.
        print(f"fastrnn {command}: note: the compiled kernels do not import from {os.path.dirname(__file__)}, "
              "so the slow reference backend runs (build them in place with `pip install -e .`, or run "
              "from outside the source tree after `pip install .`)", file=sys.stderr)
        return "reference"
    if requested not in available:
        print(f"fastrnn {command}: error: backend {requested!r} is not available here "
              f"(available: {', '.join(available)})", file=sys.stderr)
        return None
    return requested


def output_problem(path, option):
    """None if `path` can be written (see fastrnn._io.check_writable), else one line saying why.

    The tools call this before training, so a bad output path fails at once, not after the work.
    """
    try:
        check_writable(path)
    except OSError as error:
        return f"cannot write {option} {path}: {error.strerror or error}"
    return None


def training_backend(args, command):
    """The backend a training command runs on, after checking its --json path first (a bad path
    fails now, not after training); None, after printing one line, when either is unusable."""
    problem = args.json and output_problem(args.json, "--json")
    if problem:
        print(f"fastrnn {command}: error: {problem}", file=sys.stderr)
        return None
    return choose_backend(args.backend, command)


def write_json(path, results, command):
    """Write `results` to `path` atomically; returns False after printing one line if that fails."""
    try:
        with atomic_write(path, "w") as file:
            json.dump(results, file, indent=2)
            file.write("\n")
    except OSError as error:
        print(f"fastrnn {command}: error: cannot write --json {path}: {error.strerror or error}", file=sys.stderr)
        return False
    return True
