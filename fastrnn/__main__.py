"""Command line: `fastrnn {demo,charlm,seq2seq,bench} [options]` or `python -m fastrnn ...` (docs/cli.md).

Each command lives in its own module with `add_arguments(parser)` and `run(args) -> exit code`.
`bench` is imported only when it is the command asked for, so a problem there cannot break the
other commands and `--help` stays quick.
"""
import argparse
import sys

from . import __version__
from .tools import charlm, demo, seq2seq

DESCRIPTION = """\
fastrnn: fast LSTM, GRU and Elman-RNN layers for NumPy.
Run `python -m fastrnn COMMAND --help` for the options of each command."""


def program_name():
    """How the user ran us, for usage lines: `python -m fastrnn` or the `fastrnn` console script."""
    return "python -m fastrnn" if sys.argv and sys.argv[0].endswith("__main__.py") else "fastrnn"


def build_parser(command=None):
    """The argument parser; `bench`'s options are added only when `command` is "bench"."""
    parser = argparse.ArgumentParser(
        prog=program_name(), description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"fastrnn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name, module in (("demo", demo), ("charlm", charlm), ("seq2seq", seq2seq)):
        sub = commands.add_parser(
            name,
            help=module.SUMMARY,
            description=module.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
    bench_parser = commands.add_parser(
        "bench", help="time the cython and reference backends (and PyTorch, when installed)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if command == "bench":
        from .tools import bench

        bench_parser.description = bench.__doc__
        bench.add_arguments(bench_parser)
    return parser


def main(argv=None):
    """Parse `argv` (default: sys.argv[1:]), run the command and return its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    if args.command == "bench":
        from .tools import bench

        return bench.run(args) or 0
    module = {"demo": demo, "charlm": charlm, "seq2seq": seq2seq}[args.command]
    try:
        return module.run(args)
    except KeyboardInterrupt:
        print(f"fastrnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
