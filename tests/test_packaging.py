"""Packaging metadata: `--version`, the console script's entry point, the LICENSE, pyproject fields."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastrnn
from fastrnn.__main__ import main

from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent


def test_version_in_process(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastrnn {fastrnn.__version__}"


def test_python_m_fastrnn_version():
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"fastrnn {fastrnn.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", fastrnn.__version__)


def test_console_script_when_installed():
    script = shutil.which("fastrnn", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("no fastrnn console script next to this Python: `pip install .` installs it")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"fastrnn {fastrnn.__version__}"


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source tree")
def test_pyproject_metadata():
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "BSD-3-Clause" and project["license-files"] == ["LICENSE"]
    assert project["version"] == fastrnn.__version__
    # The console script names a function that exists and is the command line's entry point.
    module, _, function = project["scripts"]["fastrnn"].partition(":")
    assert module == "fastrnn.__main__" and function == "main"
    assert "Programming Language :: Python :: 3.13" in project["classifiers"]
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # SPDX replaces them
    license_text = (ROOT / "LICENSE").read_text()
    assert "Copyright (c) 2026, the fastrnn developers" in license_text
    assert "Neither the name of the copyright holder" in license_text  # clause 3 of BSD-3-Clause
