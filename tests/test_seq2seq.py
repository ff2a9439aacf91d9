"""`python -m fastrnn seq2seq`: the generated tasks, the encoder-decoder's gradients through the
decoder cell's tape, and the command end to end."""
import json

import numpy as np
import pytest

import fastrnn
from conftest import run_cli
from fastrnn.tools import seq2seq

BACKENDS = fastrnn.available_backends()


def decode_tokens(column):
    return "".join(seq2seq.SYMBOLS[token] for token in column if token < seq2seq.BOS)


@pytest.mark.parametrize("task", ["reverse", "add"])
def test_batches_pose_the_task_they_name(task):
    source, lengths, target = seq2seq.make_batch(np.random.default_rng(0), task, 4, 50)
    for column in range(50):
        text = decode_tokens(source[:lengths[column], column])
        assert np.all(source[lengths[column]:, column] == seq2seq.PAD)
        answer = text[::-1] if task == "reverse" else str(sum(int(part) for part in text.split("+")))
        end = list(target[:, column]).index(seq2seq.EOS)
        assert decode_tokens(target[:end, column]) == answer
        assert np.all(target[end + 1:, column] == seq2seq.PAD)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_encoder_decoder_gradients_match_finite_differences(cell, backend):
    model = seq2seq.Seq2Seq(cell, hidden=3, embed=2, backend=backend, seed=1, dtype=np.float64)
    batch = seq2seq.make_batch(np.random.default_rng(2), "reverse", 3, 3)
    for module in model.modules:
        module.zero_grad()
    # Teacher forcing: the inputs do not depend on the weights, so the loss is differentiable.
    model.loss_and_gradients(batch, 1.0, np.random.default_rng(3))
    assert model.decoder.tape_length == 0
    names = ["encoder.weight_hh_l0", "decoder.weight_ih", "decoder.bias_hh", "source_embedding.weight", "head.weight"]
    analytic = {name: model.grads[name].copy() for name in names}

    def loss():
        return model.loss_and_gradients(batch, 1.0, np.random.default_rng(3))

    fastrnn.gradcheck(loss, {name: model.params[name] for name in names}, analytic, rtol=1e-5, atol=1e-8)


def test_scheduled_sampling_falls_from_teacher_forcing_to_free_running():
    steps = 11
    probabilities = [seq2seq.teacher_probability("scheduled", step, steps) for step in range(steps)]
    assert probabilities[0] == 1.0 and probabilities[-1] == 0.0
    assert np.all(np.diff(probabilities) < 0)
    assert seq2seq.teacher_probability("teacher", 5, steps) == 1.0
    assert seq2seq.teacher_probability("free", 0, steps) == 0.0


def test_command_trains_every_mode_and_reports_accuracies(tmp_path):
    out = tmp_path / "seq2seq.json"
    result = run_cli("seq2seq", "--steps", "8", "--hidden", "8", "--embed", "4", "--batch", "8",
                     "--max-digits", "3", "--quiet", "--json", out)
    assert result.returncode == 0, result.stderr
    for name in ("teacher forcing", "free running", "scheduled sampling", "greedy sequence acc"):
        assert name in result.stdout
    report = json.loads(out.read_text())
    assert list(report["modes"]) == ["teacher", "free", "scheduled"]
    for scores in report["modes"].values():
        for key in ("greedy_sequence_accuracy", "greedy_token_accuracy", "teacher_forced_token_accuracy"):
            assert 0.0 <= scores[key] <= 1.0
        # a whole sequence right implies each of its tokens right
        assert scores["greedy_sequence_accuracy"] <= scores["greedy_token_accuracy"]


def test_command_rejects_bad_options_with_a_usage_error():
    for option, value in (("--modes", "teacher,beam"), ("--max-digits", "1"), ("--task", "sort")):
        result = run_cli("seq2seq", option, value)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (option, result.stderr)
        assert f"argument {option}" in result.stderr
