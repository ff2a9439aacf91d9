"""`python -m fastrnn demo|charlm|bench` end to end, in a subprocess, with tiny budgets (docs/cli.md)."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastrnn
from conftest import TINY_CHARLM, TINY_DEMO, cli_command, run_cli

def sample_of(stdout):
    """The text between the sample markers that charlm prints."""
    match = re.search(r"--- sample: [^\n]*---\n(.*)\n--- end of sample ---", stdout, re.S)
    assert match, stdout
    return match.group(1)


def assert_one_line_error(result):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- demo ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    json_path = tmp_path_factory.mktemp("demo") / "demo.json"
    result = run_cli("demo", *TINY_DEMO, "--seed", "3", "--json", json_path)
    assert result.returncode == 0, result.stderr
    return result, json.loads(json_path.read_text())


def table_rows(stdout):
    """cell name -> its table row split into columns (columns are 2+ spaces apart)."""
    rows = {}
    for line in stdout.splitlines():
        columns = re.split(r"\s{2,}", line.strip())
        if columns[0] in ("RNN", "LSTM", "GRU"):
            rows[columns[0]] = columns
    return rows


def test_demo_table_has_one_row_of_numbers_per_cell(demo):
    result, _ = demo
    rows = table_rows(result.stdout)
    assert sorted(rows) == ["GRU", "LSTM", "RNN"]
    for name, (_, mse, baseline, solved, seconds, speedup) in rows.items():
        assert float(mse) >= 0
        assert 0.05 < float(baseline) < 0.3  # Var(u1 + u2) = 1/6 over 2000 sequences
        assert solved in ("yes", "no")
        assert re.fullmatch(r"\d+\.\d s", seconds), seconds
        assert re.fullmatch(r"\d+\.\dx|n/a \(not built\)", speedup), speedup


def test_demo_explains_solved_and_the_lesson(demo):
    result, _ = demo
    assert "solved: test MSE below 0.01" in result.stdout
    assert "cython speedup:" in result.stdout
    # Fifteen steps solve nothing, and the closing line says so.
    assert result.stdout.rstrip().splitlines()[-1].startswith("Not every gated cell")


def test_demo_json_holds_the_numbers_of_the_table(demo):
    result, summary = demo
    rows = table_rows(result.stdout)
    assert list(summary["cells"]) == ["rnn", "lstm", "gru"]
    assert (summary["seq_len"], summary["hidden"], summary["batch"], summary["steps"]) == (8, 8, 16, 15)
    assert summary["backend"] == "reference"
    assert f"{summary['baseline_mse']:.4f}" == rows["RNN"][2]
    for cell, numbers in summary["cells"].items():
        assert f"{numbers['test_mse']:.4f}" == rows[cell.upper()][1]
        assert numbers["solved"] == (numbers["test_mse"] < summary["solved_below_mse"])
        assert numbers["train_seconds"] > 0


def test_demo_same_seed_gives_the_same_errors(demo, tmp_path):
    _, summary = demo
    again = tmp_path / "again.json"
    result = run_cli("demo", *TINY_DEMO, "--seed", "3", "--cells", "gru,rnn", "--json", again)
    assert result.returncode == 0, result.stderr
    repeated = json.loads(again.read_text())["cells"]
    assert list(repeated) == ["gru", "rnn"]
    for cell in repeated:
        assert repeated[cell]["test_mse"] == summary["cells"][cell]["test_mse"]


def test_demo_rejects_an_unknown_cell():
    result = run_cli("demo", "--cells", "lstm,transformer")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "transformer" in result.stderr


# -- charlm -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(corpus):
    """A 30-step run that samples, saves a checkpoint and writes JSON."""
    ckpt, json_path = corpus.parent / "model.npz", corpus.parent / "run.json"
    result = run_cli("charlm", corpus, *TINY_CHARLM, "--steps", "30", "--sample", "60", "--prime", "def ",
                     "--seed", "5", "--save", ckpt, "--json", json_path)
    assert result.returncode == 0, result.stderr
    return result, ckpt, json.loads(json_path.read_text())


def test_charlm_reports_perplexity_against_the_unigram_baseline(trained):
    result, _, summary = trained
    assert "held-out perplexity" in result.stdout and "unigram baseline" in result.stdout
    assert summary["steps"] == 30
    assert [entry["step"] for entry in summary["history"]] == [10, 20, 30]
    assert 1.0 < summary["heldout_perplexity"] < summary["vocab_size"] * 2
    assert 1.0 < summary["unigram_perplexity"] < summary["vocab_size"]
    assert f"{summary['heldout_perplexity']:.2f}" in result.stdout


def test_charlm_sample_continues_the_prime(trained):
    result, _, summary = trained
    text = sample_of(result.stdout)
    assert text == summary["sample"]
    assert text.startswith("def ") and len(text) == len("def ") + 60


def test_charlm_checkpoint_is_plain_arrays(trained, corpus):
    _, ckpt, summary = trained
    with np.load(ckpt, allow_pickle=False) as archive:
        options = json.loads(str(archive["options"]))
        vocab = "".join(map(chr, archive["vocab"].tolist()))
        weight_hh = archive["param/rnn.weight_hh_l0"]
    assert vocab == "".join(sorted(set(corpus.read_text(encoding="utf-8"))))
    assert (options["cell"], options["hidden"], options["embed"], options["step"]) == ("lstm", 16, 8, 30)
    assert weight_hh.shape == (4 * 16, 16)


def test_charlm_loaded_checkpoint_samples_what_training_sampled(trained):
    _, ckpt, summary = trained
    result = run_cli("charlm", "--load", ckpt, "--sample", 60, "--prime", "def ", "--seed", 5,
                     "--backend", "reference")
    assert result.returncode == 0, result.stderr
    assert sample_of(result.stdout) == summary["sample"]


def test_charlm_same_seed_same_checkpoint_same_text_and_other_seed_differs(trained):
    _, ckpt, _ = trained
    runs = [run_cli("charlm", "--load", ckpt, "--steps", 0, "--sample", 80, "--prime", "return", "--seed", seed,
                    "--temperature", 1.5, "--backend", "reference") for seed in (11, 11, 12)]
    first, second, other = (sample_of(run.stdout) for run in runs)
    assert first == second
    assert first != other


def test_charlm_resumes_training_from_a_checkpoint(trained, corpus, tmp_path):
    _, ckpt, _ = trained
    resumed, json_path = tmp_path / "resumed.npz", tmp_path / "resumed.json"
    result = run_cli("charlm", corpus, *TINY_CHARLM, "--load", ckpt, "--steps", 10, "--sample", 0,
                     "--save", resumed, "--json", json_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(json_path.read_text())
    assert (summary["steps"], summary["steps_total"]) == (10, 40)
    with np.load(resumed, allow_pickle=False) as archive:
        assert json.loads(str(archive["options"]))["step"] == 40
        assert int(archive["optim/rnn.weight_hh_l0/step"]) == 40  # Adam's state came along


def test_charlm_minutes_budget_stops_training_early(corpus, tmp_path):
    json_path = tmp_path / "run.json"
    result = run_cli("charlm", corpus, *TINY_CHARLM, "--steps", 100000, "--minutes", 0.0001, "--sample", 0,
                     "--json", json_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(json_path.read_text())["steps"] < 100000


def test_charlm_ctrl_c_ends_training_but_still_evaluates_samples_and_saves(corpus, tmp_path):
    ckpt, json_path = tmp_path / "interrupted.npz", tmp_path / "interrupted.json"
    args = ["charlm", corpus, *TINY_CHARLM, "--steps", 100000, "--sample", 20, "--save", ckpt, "--json", json_path]
    args.remove("--quiet")  # the progress lines on stderr tell when training is under way
    argv, env = cli_command(*args)
    # SIGINT may be ignored in a background job; the child gets the default handler back.
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in process.stderr:
        if line.startswith("step 10:"):
            break
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    summary = json.loads(json_path.read_text())
    assert 10 <= summary["steps"] < 100000
    assert summary["history"][-1]["step"] == summary["steps"]
    assert len(summary["sample"]) == 21 and ckpt.exists()


def write_bytes(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


BAD_INPUTS = {
    "missing file": (lambda tmp, ckpt: [tmp / "nowhere.txt"], "cannot read"),
    "empty file": (lambda tmp, ckpt: [write_bytes(tmp, "empty.txt", b"")], "is empty"),
    "binary file": (lambda tmp, ckpt: [write_bytes(tmp, "blob.bin", bytes(range(256)) * 4)], "binary"),
    "not utf-8": (lambda tmp, ckpt: [write_bytes(tmp, "latin1.txt", "café ".encode("latin-1") * 50)], "UTF-8"),
    "text too short": (lambda tmp, ckpt: [write_bytes(tmp, "short.txt", b"def f(): pass\n")], "too short"),
    "checkpoint not npz": (lambda tmp, ckpt: ["--load", write_bytes(tmp, "fake.npz", b"not a zip" * 20)],
                           "not a fastrnn charlm checkpoint"),
    "checkpoint of other data": (lambda tmp, ckpt: ["--load", save_npz(tmp / "other.npz", weights=np.ones(3))],
                                 "not a fastrnn charlm checkpoint"),
    "checkpoint missing": (lambda tmp, ckpt: ["--load", tmp / "absent.npz"], "no such file"),
    "checkpoint of another size": (lambda tmp, ckpt: ["--load", ckpt, "--hidden", "32"], "--hidden 16, not 32"),
    "checkpoint with a wrong array": (lambda tmp, ckpt: ["--load", reshaped_checkpoint(ckpt, tmp)],
                                      "does not fit this model"),
    "prime with unknown characters": (lambda tmp, ckpt: ["--load", ckpt, "--prime", "d\u00e9f\u00e8"],
                                      "--prime has characters that are not in the vocabulary: '\u00e8\u00e9'"),
}


def save_npz(path, **arrays):
    with open(path, "wb") as file:
        np.savez(file, **arrays)
    return path


def reshaped_checkpoint(ckpt, tmp):
    with np.load(ckpt, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["param/head.bias"] = arrays["param/head.bias"][:-1]
    return save_npz(tmp / "reshaped.npz", **arrays)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_charlm_bad_input_exits_2_with_one_line(case, trained, tmp_path):
    _, ckpt, _ = trained
    make_args, message = BAD_INPUTS[case]
    args = make_args(tmp_path, ckpt)
    steps = 0 if "--load" in args else 5
    result = run_cli("charlm", *args, "--steps", steps, "--backend", "reference", "--quiet", "--bptt", 16, "--batch", 4)
    line = assert_one_line_error(result)
    assert line.startswith("fastrnn charlm: error: ")
    assert message in line


# -- help ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command, options", [
    ("demo", ["--seq-len", "--steps", "--hidden", "--batch", "--lr", "--clip", "--cells", "--seed", "--backend",
              "--json", "--quiet"]),
    ("charlm", ["FILE", "--cell", "--layers", "--hidden", "--embed", "--steps", "--minutes", "--bptt", "--batch",
                "--optim", "--lr", "--clip", "--eval-every", "--keep", "--patience", "--sample", "--prime",
                "--temperature", "--save", "--load", "--score", "--seed", "--backend", "--json", "--quiet"]),
])
def test_help_lists_every_option(command, options):
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    for option in options:
        assert re.search(rf"^\s+{re.escape(option)}\b", result.stdout, re.M), option


def test_top_level_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("demo", "charlm", "bench"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M), command


def test_bench_help_reaches_the_bench_options():
    result = run_cli("bench", "--help")
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout


def test_no_command_is_a_usage_error():
    result = run_cli()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["demo", "charlm"])
def test_negative_seed_is_a_usage_error(command):
    result = run_cli(command, "--seed", "-1", "--backend", "reference")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--seed: must be an integer >= 0, got -1" in result.stderr
