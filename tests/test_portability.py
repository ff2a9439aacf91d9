"""Importing fastrnn where the platform lacks what Linux has (os.register_at_fork on Windows), and
the per-cell fallback when a compiled module fails while importing with any error."""
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest

import fastrnn
from fastrnn import _backends, _cells

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))


def test_import_without_register_at_fork_keeps_the_compiled_backend(tmp_path):
    # A fresh interpreter (the kernels are imported once per process), given the fastrnn this
    # test process imported.
    script = textwrap.dedent("""
        import os, random, secrets, tempfile, warnings
        import numpy, scipy.linalg, threadpoolctl, tqdm  # the standard library's and the
        del os.register_at_fork                         # dependencies' own calls come first
        warnings.simplefilter("error")
        import numpy as np
        import fastrnn
        layer = fastrnn.LSTM(3, 4, seed=0)
        y, _ = layer(np.ones((2, 1, 3), np.float32))
        print(layer.backend, y.shape)
    """)
    env = {**os.environ, "PYTHONPATH": PACKAGE_PARENT}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [fastrnn.available_backends("lstm")[0], "(2,", "1,", "4)"]


def test_a_compiled_module_raising_any_error_at_import_falls_back(tmp_path, monkeypatch):
    (tmp_path / "fastrnn_broken_kernels.py").write_text(
        "import os\nos.no_such_platform_call()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(_cells.CELLS, "gru", replace(_cells.CELLS["gru"], kernels="fastrnn_broken_kernels"))
    monkeypatch.setattr(_backends, "_warned_fallback", set())
    assert fastrnn.available_backends("gru") == ["reference"]
    with pytest.warns(RuntimeWarning, match="fastrnn_broken_kernels did not import"):
        assert fastrnn.GRU(3, 4).backend == "reference"
    with pytest.raises(ValueError, match="no compiled kernels that import"):
        fastrnn.GRU(3, 4, backend="cython")
