"""The command-line tools built on the library: `python -m fastrnn {demo,charlm,bench}`.

Each tool is a module with `add_arguments(parser)` and `run(args) -> exit code`; `_cli` holds what
they share. The library itself (`fastrnn.layers`, `losses`, `optim`, ...) never imports from here.
"""
