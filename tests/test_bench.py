"""`python -m fastrnn bench` end to end on a tiny shape (no timing is asserted, only the table)."""
import json

from fastrnn.tools.bench import matmul_flops
from conftest import run_cli


def test_matmul_flops_counts_the_input_and_recurrent_products():
    # LSTM, T=2, B=3, D=4, H=5: x·W_ihᵀ is (6 x 4)·(4 x 20), h·W_hhᵀ is 2 steps of (3 x 5)·(5 x 20)
    forward = 2 * 6 * 4 * 20 + 2 * 2 * 3 * 5 * 20
    assert matmul_flops("lstm", (2, 3, 4, 5), "forward") == forward
    # backward: dx and dW_ih, dh_{t-1} and dW_hh: the same products twice more
    assert matmul_flops("lstm", (2, 3, 4, 5), "forward+backward") == 3 * forward
    assert matmul_flops("rnn", (2, 3, 4, 5), "forward") == forward / 4


def test_bench_writes_every_row_to_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli("bench", "--quick", "--rounds", "2", "--no-torch", "--no-jax", "--shapes", "3,2,4,5;2,1,3,3",
                     "--cells", "gru,rnn", "--json", out)
    assert result.returncode == 0, result.stderr
    assert "GFLOP/s" in result.stdout
    rows = json.loads(out.read_text())["results"]
    assert [(r["cell"], r["mode"], r["shape"]) for r in rows] == [
        (cell, mode, shape)
        for cell in ("gru", "rnn")
        for mode in ("forward", "forward+backward")
        for shape in ([3, 2, 4, 5], [2, 1, 3, 3])
    ]
    for row in rows:
        assert row["reference_ms"] > 0
        if "cython_ms" in row:
            assert row["cython_spread"] >= 1.0
            assert abs(row["speedup_vs_reference"] - row["reference_ms"] / row["cython_ms"]) < 1e-9


def test_bench_help_lists_every_option():
    result = run_cli("bench", "--help")
    for option in ("--quick", "--json", "--cells", "--shapes", "--rounds", "--no-torch", "--no-jax",
                   "--no-reference"):
        assert option in result.stdout


def test_bench_rejects_bad_options_with_a_usage_error():
    for option, value in (("--shapes", "3,2"), ("--rounds", "-1"), ("--cells", "lstm,tcn")):
        result = run_cli("bench", option, value)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (option, result.stderr)
        assert f"argument {option}" in result.stderr
