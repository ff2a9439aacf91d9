"""README.md's examples run as written."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_block(heading):
    text = README.read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_training_loop_example_learns(capsys):
    exec(compile(python_block("Training in your own NumPy loop"), "README.md", "exec"), {})
    errors = [float(value) for value in re.findall(r"mse ([0-9.]+)", capsys.readouterr().out)]
    assert len(errors) == 4
    assert errors[-1] < errors[0] / 20


def test_seq2seq_example_learns_to_reverse(capsys):
    exec(compile(python_block("A decoder that feeds itself: seq2seq in a NumPy loop"), "README.md", "exec"), {})
    reversed_share = [int(value) for value in re.findall(r"reversed ([0-9]+)%", capsys.readouterr().out)]
    assert len(reversed_share) == 5
    assert reversed_share[0] < 20 and reversed_share[-1] >= 80


def test_vanishing_gradient_example_shows_the_gradient_vanish(capsys):
    namespace = {}
    exec(compile(python_block("Seeing vanishing gradients"), "README.md", "exec"), namespace)
    norms = namespace["norms"]
    assert norms.shape == (100,)
    assert norms[0] < 1e-6 * norms[-1]
    assert "at t = 0" in capsys.readouterr().out


def test_tour_example_shapes():
    namespace = {}
    exec(compile(python_block("A tour"), "README.md", "exec"), namespace)
    assert namespace["y"].shape == (20, 4, 64)
    assert namespace["h_n"].shape == (4, 4, 32)
    assert namespace["dx"].shape == namespace["x"].shape
    assert namespace["lstm"].grads["weight_hh_l1_reverse"].shape == (128, 32)


@pytest.mark.parametrize("line", [
    'pip install . && fastrnn demo',
    'pip install ".[test]" && pytest',
])
def test_quick_start_commands_open_the_readme(line):
    first_block = README.read_text(encoding="utf-8").split("```bash\n", 1)[1].split("```", 1)[0]
    assert line in first_block
