"""What several test files share."""
import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastrnn

# The subprocess imports the same fastrnn as this test process (source tree or installed).
PACKAGE_PARENT = str(Path(fastrnn.__file__).resolve().parent.parent)
TINY_DEMO = ["--seq-len", "8", "--steps", "15", "--hidden", "8", "--batch", "16", "--backend", "reference",
             "--quiet"]
TINY_CHARLM = ["--hidden", "16", "--embed", "8", "--bptt", "16", "--batch", "4", "--eval-every", "10",
               "--backend", "reference", "--quiet"]


def subprocess_env():
    """The environment of a child Python that must import this test process's fastrnn: its parent
    folder first on the path, and the current folder not at all (PYTHONSAFEPATH, Python 3.11+),
    since a checkout's uncompiled source tree there would shadow the installed package."""
    env = dict(os.environ, PYTHONSAFEPATH="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    return env


def cli_command(*args):
    """(argv, env) that run `python -m fastrnn ARGS` on this test process's fastrnn."""
    return [sys.executable, "-m", "fastrnn", *map(str, args)], subprocess_env()


def run_cli(*args):
    argv, env = cli_command(*args)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(7)
    names = ["alpha", "beta", "gamma", "delta"]
    lines = [f"def {names[i % 4]}_{i}(x):\n    return x * {rng.integers(10)} + {rng.integers(10)}\n\n"
             for i in range(150)]
    path = tmp_path_factory.mktemp("charlm") / "corpus.py"
    path.write_text("".join(lines), encoding="utf-8")
    return path


class DiskFull:
    """A file wrapper whose writes fail with ENOSPC once `room` bytes are written."""

    def __init__(self, file, room):
        self.file, self.room = file, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def simulate_full_disk(monkeypatch, where, room=100):
    """Make the disk 'fill up' in a write after `room` bytes, or in the fsync."""
    if where == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda *args, **kwargs: DiskFull(real_fdopen(*args, **kwargs), room))
    else:
        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(os, "fsync", fsync)
