"""`python -m fastrnn bench` end to end on a tiny shape (no timing is asserted, only the table)."""
import argparse
import json

import numpy as np
import pytest

import fastrnn
from fastrnn.tools.bench import thread_list
from fastrnn.tools.bench_core import matmul_flops
from fastrnn.tools.bench_machine import describe
from fastrnn.tools.bench_train import make_steps, model_list, step_flops
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
    all_rows = json.loads(out.read_text())["results"]
    rows = [row for row in all_rows if "lengths" not in row]
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
    # with the compiled backend, a row of the call with lengths after each padded row
    lengths_rows = [row for row in all_rows if "lengths" in row]
    if lengths_rows:
        assert len(all_rows) == 2 * len(rows)
        for padded, row in zip(all_rows[::2], all_rows[1::2]):
            assert (row["cell"], row["mode"], row["shape"]) == (padded["cell"], padded["mode"], padded["shape"])
            assert row["lengths_vs_padded"] == pytest.approx(row["cython_ms"] / padded["cython_ms"])
            assert 0 < row["work_share"] <= 1


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


# -- bench --train, --mixed, the busy-machine warning, the table width ----------------------------

TINY_MODELS = "lstm,1,3,2,4;gru,2,2,3,5"


def assert_narrow(result):
    """Every line bench printed (both streams) fits in 100 columns."""
    for line in (result.stdout + result.stderr).splitlines():
        assert len(line) <= 100, line


def test_train_writes_every_model_contender_and_thread_row(tmp_path):
    pytest.importorskip("torch")
    from threadpoolctl import threadpool_info
    out = tmp_path / "train.json"
    result = run_cli("bench", "--train", "--quick", "--rounds", "1", "--models", TINY_MODELS,
                     "--threads", "default,1", "--json", out)
    assert result.returncode == 0, result.stderr
    assert_narrow(result)
    summary = json.loads(out.read_text())
    default = max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
    contenders = [name for name in ("cython", "reference") if name in fastrnn.available_backends()] + ["torch"]
    models = [("lstm", 1, 3, 2, 4), ("gru", 2, 2, 3, 5)]
    expected = {(*model, threads, name) for threads in (default, 1) for model in models for name in contenders}
    steps = summary["steps"]
    assert len(steps) == len(expected)
    assert {(s["cell"], s["layers"], s["T"], s["B"], s["H"], s["threads"], s["contender"]) for s in steps} == expected
    for step in steps:
        assert step["ms"] > 0 and len(step["rounds_ms"]) == 1
        if step["contender"] == "torch":
            assert "outside_share" not in step
        else:
            assert 0.0 <= step["outside_share"] <= 1.0
            assert 0 < step["layer_ms"] <= step["ms"] * 1.5
    # The same initial weights and batch in every contender: the first step's losses agree.
    for model in models:
        losses = [s["first_loss"] for s in steps if (s["cell"], s["layers"], s["T"], s["B"], s["H"]) == model]
        np.testing.assert_allclose(losses, losses[0], rtol=1e-5)
        assert abs(losses[0] - np.log(96)) < 0.5  # near-uniform predictions over the 96 characters
    for row in summary["results"]:
        if "cython_ms" in row:
            assert row["speedup_vs_torch"] == pytest.approx(row["torch_ms"] / row["cython_ms"])
            assert row["speedup_vs_reference"] == pytest.approx(row["reference_ms"] / row["cython_ms"])
    assert "geometric mean" in result.stdout
    assert summary["machine"]["cores"] >= 1 and len(summary["machine"]["calibration_ms"]) == 2


def test_train_without_torch_leaves_its_rows_and_column_out(tmp_path):
    out = tmp_path / "train.json"
    result = run_cli("bench", "--train", "--quick", "--rounds", "1", "--no-torch", "--models", "lstm,1,3,2,4",
                     "--threads", "1", "--json", out)
    assert result.returncode == 0, result.stderr
    assert_narrow(result)
    steps = json.loads(out.read_text())["steps"]
    assert "torch" not in {step["contender"] for step in steps} and "reference" in {step["contender"] for step in steps}
    assert "x torch" not in result.stdout and "geometric mean" not in result.stdout


def test_mixed_rows_have_isolated_mixed_and_single_thread_figures(tmp_path):
    out = tmp_path / "mixed.json"
    result = run_cli("bench", "--mixed", "--quick", "--rounds", "1", "--cells", "lstm,rnn", "--shapes", "3,2,4,5",
                     "--json", out)
    assert result.returncode == 0, result.stderr
    assert_narrow(result)
    summary = json.loads(out.read_text())
    rows = summary["results"]
    assert [(r["cell"], r["shape"], r["backend"]) for r in rows] == [
        (cell, [3, 2, 4, 5], backend) for cell in ("lstm", "rnn") for backend in fastrnn.available_backends()]
    for row in rows:
        for variant in ("isolated", "mixed", "single"):
            assert row[f"{variant}_ms"] > 0
        assert row["mixed_vs_isolated"] == pytest.approx(row["mixed_ms"] / row["isolated_ms"])
        assert row["mixed_vs_single"] == pytest.approx(row["mixed_ms"] / row["single_ms"])
        for thread in row["foreign_threads"]:
            assert thread["share"] > 0.05 and thread["label"]
    assert "main thread" in summary["thread_labels"].values()
    if "cython" in fastrnn.available_backends():
        cython_rows = [row for row in rows if row["backend"] == "cython"]
        not_slower = sum(row["mixed_ms"] <= row["single_ms"] for row in cython_rows)
        assert f"cython rows: mixed <= 1-thr in {not_slower} of {len(cython_rows)};" in result.stdout


def test_quick_table_fits_in_100_columns():
    result = run_cli("bench", "--quick", "--rounds", "1", "--shapes", "3,2,4,5", "--cells", "rnn")
    assert result.returncode == 0, result.stderr
    assert_narrow(result)
    assert "calibration loop" in result.stdout


def figures(**changes):
    calm = {"cores": 2, "load_average_before": 0.1, "load_average_after": 1.9, "other_cores_busy": 0.1,
            "own_cores_busy": 1.9, "steal_cores": 0.0, "calibration_ms": [10.0, 10.5]}
    return dict(calm, **changes)


def test_busy_machine_warning_names_what_found_it_busy():
    assert describe(figures())[0] is None
    assert not any("WARNING" in line for line in describe(figures())[1])
    warning, lines = describe(figures(other_cores_busy=0.8))
    assert "other processes" in warning and "0.80 cores" in warning
    assert lines[-1].startswith("WARNING") and "0.80 cores" in lines[-1]
    warning, _ = describe(figures(steal_cores=0.6))
    assert "0.70 cores" in warning  # other processes' 0.1 plus the hypervisor's 0.6
    warning, _ = describe(figures(calibration_ms=[10.0, 14.0]))
    assert "calibration" in warning and "1.40x" in warning
    # Without /proc/stat only the calibration loop can tell.
    calm = figures()
    del calm["other_cores_busy"], calm["own_cores_busy"], calm["steal_cores"]
    assert describe(calm)[0] is None


def test_model_and_thread_options_parse():
    assert model_list("lstm,2,100,32,256; GRU,1,64,32,128") == [("lstm", 2, 100, 32, 256), ("gru", 1, 64, 32, 128)]
    assert thread_list("default,1,default") == [None, 1]
    for bad in ("rnn,1,2,3,4", "lstm,1,2,3", "lstm,0,2,3,4", ";"):
        with pytest.raises(argparse.ArgumentTypeError):
            model_list(bad)
    for bad in ("0", "two", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            thread_list(bad)


def test_step_flops_counts_the_recurrent_and_head_products():
    # LSTM 2 layers, T=2, B=3, H=5: layer 0 reads the 64-wide embedding, layer 1 the 5-wide output.
    layers = matmul_flops("lstm", (2, 3, 64, 5), "forward+backward") + matmul_flops("lstm", (2, 3, 5, 5), "forward+backward")
    head = 3 * 2 * 6 * 5 * 96
    assert step_flops(("lstm", 2, 2, 3, 5)) == layers + head


def test_fastrnn_and_torch_steps_train_alike():
    torch = pytest.importorskip("torch")
    model = ("gru", 2, 5, 3, 8)
    steps = make_steps(model, ["reference", "torch"], torch)
    for _ in range(3):
        for step in steps.values():
            step()
    np.testing.assert_allclose(steps["reference"].losses, steps["torch"].losses, rtol=1e-5)
    after = steps["reference"].rnn.params["weight_hh_l1"]
    np.testing.assert_allclose(after, steps["torch"].rnn.weight_hh_l1.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_bench_help_lists_the_new_options():
    result = run_cli("bench", "--help")
    for option in ("--train", "--mixed", "--models", "--threads"):
        assert option in result.stdout


def test_bench_rejects_bad_new_options_with_a_usage_error():
    for args in (["--train", "--models", "lstm,1,2"], ["--train", "--threads", "0"], ["--train", "--mixed"]):
        result = run_cli("bench", *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (args, result.stderr)
        assert "usage:" in result.stderr and f"argument {args[-2] if args[-1] != '--mixed' else '--mixed'}" in result.stderr
    result = run_cli("bench", "--models", "lstm,1,2,2,2")
    assert result.returncode == 2 and "argument --models: only with --train" in result.stderr
