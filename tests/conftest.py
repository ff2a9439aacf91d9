"""What several test files share."""
import os
import subprocess
import sys
from pathlib import Path

import fastrnn

# The subprocess imports the same fastrnn as this test process (source tree or installed).
PACKAGE_PARENT = str(Path(fastrnn.__file__).resolve().parent.parent)
TINY_DEMO = ["--seq-len", "8", "--steps", "15", "--hidden", "8", "--batch", "16", "--backend", "reference",
             "--quiet"]
TINY_CHARLM = ["--hidden", "16", "--embed", "8", "--bptt", "16", "--batch", "4", "--eval-every", "10",
               "--backend", "reference", "--quiet"]


def cli_command(*args):
    """(argv, env) that run `python -m fastrnn ARGS` on this test process's fastrnn."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    return [sys.executable, "-m", "fastrnn", *map(str, args)], env


def run_cli(*args):
    argv, env = cli_command(*args)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
