"""Helpers the command-line tools share: argparse types, backend choice, --json output."""
import argparse
import json
import os
import sys

import numpy as np

from . import available_backends


def positive_int(text):
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text):
    """argparse type: a finite number > 0."""
    value = float(text)
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
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


def write_json(path, results, command):
    """Write `results` to `path`; returns False after printing one line if that fails."""
    try:
        with open(path, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
            file.write("\n")
    except OSError as error:
        print(f"fastrnn {command}: error: cannot write --json {path}: {error.strerror}", file=sys.stderr)
        return False
    return True
