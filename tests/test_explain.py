"""`python -m fastrnn demo --explain` (and --plot): the gradient norm against the distance from
the loss, as a text table and, with matplotlib, a PNG (docs/cli.md §2)."""
import contextlib
import io
import re
import struct
import sys

import pytest

from fastrnn.__main__ import main

T = 64
SMALL = ["demo", "--explain", "--seq-len", str(T), "--steps", "2", "--hidden", "16", "--batch", "8",
         "--cells", "rnn,lstm", "--backend", "reference", "--quiet"]


def _table(stdout, title):
    """{column label: [norms by row]} and the distances of the table under `title`."""
    block = stdout.split(f"{title}:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    labels = re.split(r"\s{2,}", block[0].strip())[1:]
    distances, columns = [], {label: [] for label in labels}
    for line in block[1:-1]:
        fields = line.split()
        distances.append(int(fields[0]))
        for label, value in zip(labels, fields[1:]):
            columns[label].append(float(value))
    return distances, columns


@pytest.fixture(scope="module")
def explained():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(SMALL)
    assert code == 0
    return out.getvalue()


def test_tanh_rnn_gradient_vanishes_at_init(explained):
    distances, columns = _table(explained, "at initialisation")
    assert distances[0] == 0 and distances[-1] == T - 1
    assert distances == sorted(set(distances)) and len(distances) >= 7  # log-spaced: 0, 1, 2, 4, ...
    rnn = columns["RNN"]
    assert all(far < near for near, far in zip(rnn, rnn[1:]))
    assert rnn[-1] / rnn[0] < 1e-6  # orders of magnitude over 63 steps
    assert list(columns) == ["RNN", "LSTM", "LSTM fb=+1"]
    # The raised forget-gate bias keeps more of the gradient over the whole distance.
    assert columns["LSTM fb=+1"][-1] > 100 * columns["LSTM"][-1]


def test_after_training_table_has_the_trained_cells(explained):
    distances, columns = _table(explained, "after 2 training steps")
    assert list(columns) == ["RNN", "LSTM"]
    assert all(len(values) == len(distances) and min(values) > 0 for values in columns.values())


def test_plot_is_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    assert main(SMALL + ["--plot", str(path)]) == 0
    assert f"plot written to {path}" in capsys.readouterr().out
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100
    assert data[-8:-4] == b"IEND"


def test_plot_without_matplotlib_prints_the_table(tmp_path, capsys, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails
    path = tmp_path / "curves.png"
    assert main(SMALL + ["--plot", str(path)]) == 0
    out = capsys.readouterr().out
    assert "matplotlib is not installed" in out
    assert _table(out, "at initialisation")[1]["RNN"]
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_plot_path_is_checked_before_training(tmp_path, capsys):
    path = tmp_path / "missing" / "curves.png"
    assert main(SMALL + ["--plot", str(path)]) == 2
    captured = capsys.readouterr()
    assert "cannot write --plot" in captured.err and str(path) in captured.err
    assert "adding problem" not in captured.out  # nothing trained


def test_help_lists_the_explain_options(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    for option in ("--explain", "--plot", "--forget-bias"):
        assert re.search(rf"^\s+{option}\b", out, re.M), option
