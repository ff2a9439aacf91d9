"""charlm's --cell rnn, --score, --keep/--patience, output checks before training, recorded corpus."""
import hashlib
import json
import math
import os

import numpy as np
import pytest

import fastrnn
from conftest import TINY_CHARLM, run_cli
from fastrnn.__main__ import main
from fastrnn.tools import charlm

TINY = TINY_CHARLM + ["--eval-every", "5"]  # the later --eval-every wins


def run_main(capsys, *args):
    """`python -m fastrnn ARGS` in this process: (exit code, stdout, stderr)."""
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def options_of(path):
    with np.load(path, allow_pickle=False) as archive:
        return json.loads(str(archive["options"]))


def random_model(cell, vocab, layers=2, seed=3, backend="reference"):
    architecture = {"cell": cell, "layers": layers, "hidden": 7, "embed": 5}
    return charlm.CharModel(len(vocab), architecture, backend, seed), architecture


# -- one step of the model ----------------------------------------------------------------


@pytest.mark.parametrize("backend", fastrnn.available_backends())
@pytest.mark.parametrize("cell", sorted(charlm.CELLS))
def test_stepping_one_character_at_a_time_equals_one_forward(cell, backend):
    model, _ = random_model(cell, "abcdef", backend=backend)
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 6, size=(12, 3))
    whole, final = model.infer(indices, None)
    state = None
    for t in range(12):
        logits, state = model.step(indices[t], state)
        np.testing.assert_allclose(logits, whole[t], rtol=1e-5, atol=1e-6)
    for got, want in zip(*((state, final) if cell == "lstm" else ((state,), (final,)))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# -- --keep best and --patience -----------------------------------------------------------


def test_best_model_counts_evaluations_without_improvement():
    model, _ = random_model("gru", "ab")
    optimizer = charlm.make_optimizer("adam", 1e-3)
    best = charlm.BestModel(patience=2)
    offers = [(5, 9.0, True), (10, 7.0, True), (15, 7.5, False), (20, 6.5, True), (25, math.nan, False),
              (30, 6.5, False)]
    for step, perplexity, improved in offers:
        before = best.exhausted
        assert not before
        model.params["head.bias"][...] = step  # tells the snapshots apart
        assert best.offer(step, perplexity, model, optimizer) == improved
    assert best.exhausted and (best.step, best.perplexity) == (20, 6.5)
    best.restore(model, optimizer)
    assert (model.params["head.bias"] == 20).all()
    assert not charlm.BestModel(patience=None).exhausted


@pytest.fixture(scope="module")
def early_stopped(corpus):
    """A run whose learning rate is too high: held-out perplexity falls, then rises; --patience 2."""
    ckpt, json_path = corpus.parent / "early.npz", corpus.parent / "early.json"
    result = run_cli("charlm", corpus, *TINY, "--lr", 1, "--steps", 200, "--patience", 2, "--sample", 0,
                     "--save", ckpt, "--json", json_path)
    assert result.returncode == 0, result.stderr
    return result, ckpt, json.loads(json_path.read_text())


def test_patience_stops_training_after_evaluations_without_improvement(early_stopped):
    result, _, summary = early_stopped
    history = [entry["heldout_perplexity"] for entry in summary["history"]]
    best = int(np.argmin(history))
    assert summary["stopped_early"] and summary["steps"] < 200
    assert len(history) == best + 1 + 2  # stopped after exactly two evaluations without a lower value
    assert summary["best_step"] == summary["kept_step"] == summary["history"][best]["step"]
    assert "stopped early" in result.stdout


def test_save_holds_the_best_model_by_held_out_perplexity(early_stopped, corpus, tmp_path):
    _, ckpt, summary = early_stopped
    assert options_of(ckpt)["step"] == summary["best_step"] < summary["steps_total"]
    json_path = tmp_path / "reloaded.json"
    result = run_cli("charlm", corpus, *TINY, "--load", ckpt, "--steps", 0, "--sample", 0, "--json", json_path)
    assert result.returncode == 0, result.stderr
    reloaded = json.loads(json_path.read_text())["heldout_perplexity"]
    best = min(entry["heldout_perplexity"] for entry in summary["history"])
    assert reloaded == pytest.approx(best, rel=1e-6)
    assert summary["heldout_perplexity"] == pytest.approx(best, rel=1e-12)


def test_keep_last_saves_the_last_model(corpus, tmp_path):
    ckpt, json_path = tmp_path / "last.npz", tmp_path / "last.json"
    result = run_cli("charlm", corpus, *TINY, "--lr", 1, "--steps", 45, "--keep", "last", "--sample", 0,
                     "--save", ckpt, "--json", json_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(json_path.read_text())
    assert summary["kept_step"] == summary["steps_total"] == options_of(ckpt)["step"] == 45
    assert summary["heldout_perplexity"] == summary["history"][-1]["heldout_perplexity"]
    assert summary["best_step"] < 45  # the last model was not the best one here


def test_a_resumed_model_competes_for_best(early_stopped, corpus, tmp_path):
    """Resumed with a learning rate that ruins it, the run keeps the model it started from."""
    _, ckpt, summary = early_stopped
    start = summary["best_step"]
    saved, json_path = tmp_path / "resumed.npz", tmp_path / "resumed.json"
    result = run_cli("charlm", corpus, *TINY, "--load", ckpt, "--lr", 5, "--steps", 10, "--sample", 0,
                     "--save", saved, "--json", json_path)
    assert result.returncode == 0, result.stderr
    resumed = json.loads(json_path.read_text())
    assert resumed["history"][0]["step"] == start and resumed["history"][0]["train_loss"] is None
    assert resumed["history"][-1]["heldout_perplexity"] > resumed["history"][0]["heldout_perplexity"]
    assert resumed["kept_step"] == start == options_of(saved)["step"]


# -- --cell rnn ---------------------------------------------------------------------------


def test_cell_rnn_trains_saves_and_reloads_a_tanh_rnn(corpus, tmp_path):
    ckpt, json_path = tmp_path / "rnn.npz", tmp_path / "rnn.json"
    result = run_cli("charlm", corpus, *TINY, "--cell", "rnn", "--lr", 0.01, "--steps", 40, "--sample", 30, "--save", ckpt,
                     "--json", json_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(json_path.read_text())
    assert summary["cell"] == "rnn" and "RNN 1x16" in result.stdout
    assert summary["heldout_perplexity"] < summary["unigram_perplexity"]
    checkpoint = charlm.load_checkpoint(ckpt)
    assert checkpoint["params"]["rnn.weight_hh_l0"].shape == (16, 16)  # one gate: a plain Elman RNN
    again = run_cli("charlm", "--load", ckpt, "--sample", 30, "--backend", "reference")
    assert again.returncode == 0, again.stderr
    assert summary["sample"] in again.stdout


# -- --score ------------------------------------------------------------------------------

SCORE_VOCAB = "abcdefgh \n"


def score_text_file(tmp_path, length=300):
    rng = np.random.default_rng(11)
    path = tmp_path / "score.txt"
    path.write_text("".join(rng.choice(list(SCORE_VOCAB), size=length)), encoding="utf-8")
    return path


def torch_log_probs(checkpoint, text):
    """log p(text[i] | text[:i]) for i >= 1 under the checkpoint's weights, computed by torch."""
    torch = pytest.importorskip("torch")
    architecture, params = checkpoint["architecture"], checkpoint["params"]
    cell = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[architecture["cell"]]
    rnn = cell(architecture["embed"], architecture["hidden"], architecture["layers"]).double()
    with torch.no_grad():
        for name, value in rnn.named_parameters():
            value.copy_(torch.from_numpy(params[f"rnn.{name}"].astype(np.float64)))
        index = {char: i for i, char in enumerate(checkpoint["vocab"])}
        codes = torch.tensor([index[char] for char in text])
        x = torch.from_numpy(params["embed.weight"].astype(np.float64))[codes[:-1]][:, None, :]
        y, _ = rnn(x)
        logits = y[:, 0] @ torch.from_numpy(params["head.weight"].astype(np.float64)).T
        logits += torch.from_numpy(params["head.bias"].astype(np.float64))
        log_probs = torch.log_softmax(logits, dim=-1)
        return log_probs[torch.arange(len(text) - 1), codes[1:]].numpy()


@pytest.mark.parametrize("cell", sorted(charlm.CELLS))
def test_score_gives_the_log_likelihood_torch_computes(cell, tmp_path, capsys):
    model, architecture = random_model(cell, SCORE_VOCAB)
    ckpt = tmp_path / "model.npz"
    optimizer = charlm.make_optimizer("adam", 1e-3)
    charlm.save_checkpoint(ckpt, model, SCORE_VOCAB, architecture, optimizer, "adam", 0, None)
    text_path = score_text_file(tmp_path)  # 300 characters: more than one scoring chunk
    json_path = tmp_path / "score.json"
    code, out, err = run_main(capsys, "charlm", "--load", ckpt, "--score", text_path, "--json", json_path,
                              "--backend", "reference", "--quiet")
    assert code == 0, err
    score = json.loads(json_path.read_text())["score"]
    expected = torch_log_probs(charlm.load_checkpoint(ckpt), text_path.read_text(encoding="utf-8"))
    np.testing.assert_allclose(score["char_log_probs"], expected, rtol=1e-5, atol=1e-5)
    nats = -expected.mean()
    assert score["scored_characters"] == 299 and score["characters"] == 300
    assert score["log_likelihood"] == pytest.approx(expected.sum(), rel=1e-5)
    assert score["nats_per_char"] == pytest.approx(nats, rel=1e-5)
    assert score["bits_per_char"] == pytest.approx(nats / math.log(2), rel=1e-5)
    assert score["perplexity"] == pytest.approx(math.exp(nats), rel=1e-5)
    assert f"perplexity {score['perplexity']:.2f}" in out
    assert "--- sample" not in out  # --score alone does not sample


def test_score_after_training_scores_the_trained_model(corpus, tmp_path):
    """The held-out end of the corpus scores better after training than before (same seed)."""
    held = tmp_path / "held.py"
    held.write_text(corpus.read_text(encoding="utf-8")[-400:], encoding="utf-8")
    perplexities = []
    for steps in (0, 20):
        json_path = tmp_path / f"run{steps}.json"
        result = run_cli("charlm", corpus, *TINY, "--steps", steps, "--score", held, "--sample", 10,
                         "--json", json_path)
        assert result.returncode == 0, result.stderr
        summary = json.loads(json_path.read_text())
        perplexities.append(summary["score"]["perplexity"])
        assert len(summary["sample"]) == 11  # an explicit --sample still samples
    untrained, trained = perplexities
    assert trained < 0.9 * untrained


@pytest.mark.parametrize("content, message", [
    ("abc\u00e9z\u00e9", "--score {path} has characters that are not in the vocabulary: 'cz\u00e9'"),
    ("a", "--score {path} needs at least 2 characters: the first is the context of the rest"),
    (None, "cannot read {path}: No such file or directory"),
])
def test_score_refuses_texts_it_cannot_score_before_any_training(content, message, corpus, tmp_path):
    path = tmp_path / "text.txt"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = run_cli("charlm", corpus, *TINY, "--steps", 100000, "--score", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "fastrnn charlm: error: " + message.format(path=path)
    assert len(result.stderr.strip().splitlines()) == 1 and "trained" not in result.stdout


# -- output paths are checked before training ---------------------------------------------


@pytest.mark.parametrize("option, make_path, reason", [
    ("--save", lambda tmp: tmp / "no_such_dir" / "model.npz", "No such file or directory"),
    ("--json", lambda tmp: tmp / "no_such_dir" / "run.json", "No such file or directory"),
    ("--save", lambda tmp: tmp, "Is a directory"),
    ("--json", lambda tmp: tmp, "Is a directory"),
])
def test_charlm_checks_output_paths_before_training(option, make_path, reason, corpus, tmp_path):
    path = make_path(tmp_path)
    result = run_cli("charlm", corpus, *TINY, "--steps", 100000, option, path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"fastrnn charlm: error: cannot write {option} {path}: {reason}"
    assert result.stdout == ""  # nothing ran: no model, no training
    assert sorted(os.listdir(tmp_path)) == []


def test_demo_checks_its_json_path_before_training(tmp_path):
    path = tmp_path / "missing" / "demo.json"
    result = run_cli("demo", "--steps", 100000, "--json", path, "--backend", "reference")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"fastrnn demo: error: cannot write --json {path}: No such file or directory"
    assert result.stdout == ""


# -- the corpus a checkpoint was trained on -----------------------------------------------


@pytest.fixture
def trained_copy(corpus, tmp_path):
    """A copy of the corpus and a 10-step checkpoint trained on it."""
    text_path, ckpt = tmp_path / "text.py", tmp_path / "model.npz"
    text_path.write_bytes(corpus.read_bytes())
    result = run_cli("charlm", text_path, *TINY, "--steps", 10, "--sample", 0, "--save", ckpt)
    assert result.returncode == 0, result.stderr
    return text_path, ckpt


def test_checkpoint_records_the_path_and_hash_of_its_text(trained_copy):
    text_path, ckpt = trained_copy
    expected = hashlib.sha256(text_path.read_text(encoding="utf-8").encode("utf-8")).hexdigest()
    assert options_of(ckpt)["corpus"] == {"path": str(text_path.resolve()), "sha256": expected}


def test_resuming_without_file_trains_on_the_recorded_text(trained_copy, tmp_path, monkeypatch):
    text_path, ckpt = trained_copy
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the record is an absolute path
    json_path = tmp_path / "resumed.json"
    result = run_cli("charlm", *TINY, "--load", ckpt, "--steps", 5, "--sample", 0, "--save", ckpt,
                     "--json", json_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(json_path.read_text())
    assert summary["source"] == str(text_path.resolve())
    assert summary["characters"] == len(text_path.read_text(encoding="utf-8"))
    assert summary["steps_total"] == 15
    assert options_of(ckpt)["corpus"]["path"] == str(text_path.resolve())  # saved over its own --load file


@pytest.mark.parametrize("change, message", [
    ("edit", "has changed since checkpoint"),
    ("delete", "which no longer exists"),
    ("unrecorded", "does not record the text it was trained on"),
])
def test_resuming_without_file_refuses_a_changed_missing_or_unrecorded_text(change, message, trained_copy, tmp_path):
    text_path, ckpt = trained_copy
    if change == "edit":
        text_path.write_text(text_path.read_text(encoding="utf-8") + "# one more line\n", encoding="utf-8")
    elif change == "delete":
        text_path.unlink()
    else:
        with np.load(ckpt, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        options = json.loads(str(arrays["options"]))
        del options["corpus"]  # as checkpoints from before the record was kept
        arrays["options"] = np.array(json.dumps(options))
        with open(ckpt, "wb") as file:
            np.savez(file, **arrays)
    result = run_cli("charlm", *TINY, "--load", ckpt, "--steps", 5, "--sample", 0)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr and "give" in result.stderr
    assert "trained" not in result.stdout
    # Sampling needs no text, so it still works.
    assert run_cli("charlm", "--load", ckpt, "--sample", 5, "--backend", "reference").returncode == 0


def test_the_default_corpus_is_recorded_and_checked_on_resume(corpus, tmp_path, monkeypatch, capsys):
    text = corpus.read_text(encoding="utf-8")
    monkeypatch.setattr(charlm, "default_corpus", lambda: ("the default corpus", text))
    ckpt = tmp_path / "model.npz"
    code, _, err = run_main(capsys, "charlm", *TINY, "--steps", 5, "--sample", 0, "--save", ckpt)
    assert code == 0, err
    assert options_of(ckpt)["corpus"] == {"path": None, "sha256": hashlib.sha256(text.encode()).hexdigest()}
    code, out, err = run_main(capsys, "charlm", *TINY, "--load", ckpt, "--steps", 5, "--sample", 0)
    assert code == 0, err
    assert "text: the default corpus" in out
    monkeypatch.setattr(charlm, "default_corpus", lambda: ("the default corpus", text + "x"))
    code, out, err = run_main(capsys, "charlm", *TINY, "--load", ckpt, "--steps", 5, "--sample", 0)
    assert code == 2 and "the default corpus has changed since checkpoint" in err
