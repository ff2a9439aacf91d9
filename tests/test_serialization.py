"""fastrnn.save / fastrnn.load: whole models and optimizer state in one pickle-free, atomic file."""
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fastrnn
from fastrnn import optim

from conftest import subprocess_env


def every_module(dtype):
    """One module of every kind and option, with distinct weights."""
    return {
        "lstm": fastrnn.LSTM(3, 4, 2, bidirectional=True, peephole=True, dropout=0.25, dtype=dtype, seed=1),
        "gru": fastrnn.GRU(8, 5, reset_after=False, batch_first=True, bias=False, dtype=dtype, seed=2),
        "rnn": fastrnn.RNN(5, 3, 3, nonlinearity="relu", dtype=dtype, seed=3).eval(),
        "head": fastrnn.Linear(3, 2, dtype=dtype, seed=4),
        "head_nobias": fastrnn.Linear(3, 2, bias=False, dtype=dtype, seed=5),
        "embed": fastrnn.Embedding(10, 3, dtype=dtype, seed=6),
        "lstm_nf": fastrnn.LSTM(3, 4, forget_gate=False, peephole=True, dtype=dtype, seed=7),
        "lstm_proj": fastrnn.LSTM(3, 5, 2, bidirectional=True, proj_size=2, dtype=dtype, seed=11),
        "lstm_cell": fastrnn.LSTMCell(3, 4, forget_gate=False, dtype=dtype, seed=8),
        "gru_cell": fastrnn.GRUCell(3, 4, reset_after=False, bias=False, dtype=dtype, seed=9),
        "rnn_cell": fastrnn.RNNCell(3, 4, nonlinearity="relu", dtype=dtype, seed=10),
    }


def trained_optimizer(kind, models, steps=3):
    """An optimizer of `kind` after `steps` steps on random gradients (so its state is not zero)."""
    optimizer = {"sgd": optim.SGD(0.1, momentum=0.9, weight_decay=1e-3), "adagrad": optim.Adagrad(0.05, eps=1e-8),
                 "adam": optim.Adam(1e-2, betas=(0.8, 0.99), eps=1e-7, weight_decay=1e-4)}[kind]
    params = optim.merge(**{name: module.params for name, module in models.items()})
    rng = np.random.default_rng(7)
    for _ in range(steps):
        optimizer.step(params, {name: rng.standard_normal(value.shape) for name, value in params.items()})
    return optimizer, params


def without_backend(module):
    return repr(module).replace(f", backend={getattr(module, 'backend', '')!r}", "")


@pytest.mark.parametrize("kind", ["sgd", "adagrad", "adam"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_of_every_module_and_optimizer(tmp_path, dtype, kind):
    models = every_module(dtype)
    optimizer, params = trained_optimizer(kind, models)
    metadata = {"epoch": 3, "loss": 0.25, "vocabulary": ["a", "b"], "nested": {"ok": True, "none": None}}
    path = tmp_path / "model.ckpt"
    fastrnn.save(path, models, optimizer=optimizer, metadata=metadata)
    loaded = fastrnn.load(path, backend="reference")

    assert loaded.metadata == metadata
    assert list(loaded.modules) == list(models)
    for name, module in models.items():
        back = loaded.modules[name]
        assert type(back) is type(module) and without_backend(back) == without_backend(module)
        assert getattr(back, "backend", "reference") == "reference"  # layers and cells alike
        assert getattr(back, "training", None) == getattr(module, "training", None)
        assert back.params.keys() == module.params.keys()
        for key, value in module.params.items():
            assert back.params[key].dtype == value.dtype
            assert_array_equal(back.params[key], value)
    assert repr(loaded.optimizer) == repr(optimizer)
    saved_state, loaded_state = optimizer.state_dict(), loaded.optimizer.state_dict()
    assert saved_state.keys() == loaded_state.keys()
    for key, value in saved_state.items():
        assert loaded_state[key].dtype == value.dtype
        assert_array_equal(loaded_state[key], value)

    # Training resumes exactly: one more step from the loaded pair equals one more from the original.
    loaded_params = optim.merge(**{name: module.params for name, module in loaded.modules.items()})
    grads = {name: np.random.default_rng(8).standard_normal(value.shape) for name, value in params.items()}
    optimizer.step(params, grads)
    loaded.optimizer.step(loaded_params, grads)
    for key, value in params.items():
        assert_array_equal(loaded_params[key], value)


def test_modules_only_and_forward_agrees(tmp_path):
    lstm = fastrnn.LSTM(3, 4, dtype=np.float64, seed=0)
    fastrnn.save(tmp_path / "m.npz", {"lstm": lstm})
    loaded = fastrnn.load(tmp_path / "m.npz")
    assert loaded.optimizer is None and loaded.metadata == {}
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    assert_array_equal(loaded.modules["lstm"](x)[0], lstm(x)[0])


def test_file_is_plain_npz_without_pickle(tmp_path):
    path = tmp_path / "m.npz"
    fastrnn.save(path, {"head": fastrnn.Linear(2, 3, seed=0)}, metadata={"epoch": 1})
    with np.load(path, allow_pickle=False) as archive:
        manifest = json.loads(archive["__manifest__"].tobytes())
        assert manifest["modules"]["head"]["class"] == "Linear"
        assert manifest["arrays"]["module/head/weight"] == {"shape": [3, 2], "dtype": "float32"}
        assert all(archive[key].dtype != object for key in archive.files)


def test_save_refuses_what_it_cannot_store(tmp_path):
    path = tmp_path / "m.npz"
    with pytest.raises(TypeError, match="modules can hold"):
        fastrnn.save(path, {"x": object()})
    with pytest.raises(ValueError, match="module names"):
        fastrnn.save(path, {"a/b": fastrnn.Linear(2, 2)})
    with pytest.raises(TypeError, match="metadata must hold only JSON types"):
        fastrnn.save(path, {"a": fastrnn.Linear(2, 2)}, metadata={"array": np.zeros(2)})
    with pytest.raises(TypeError, match="optimizer must be one of"):
        fastrnn.save(path, {"a": fastrnn.Linear(2, 2)}, optimizer="adam")
    assert not path.exists() and os.listdir(tmp_path) == []


def rewrite(path, change):
    """Re-save the archive at `path` after `change(manifest, arrays)`; a test helper for damaged files."""
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    manifest = json.loads(arrays.pop("__manifest__").tobytes())
    change(manifest, arrays)
    arrays["__manifest__"] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    with open(path, "wb") as file:
        np.savez(file, **arrays)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.npz"
    models = {"lstm": fastrnn.LSTM(3, 64, seed=0), "head": fastrnn.Linear(64, 2, seed=1)}
    optimizer, _ = trained_optimizer("adam", models, steps=1)
    fastrnn.save(path, models, optimizer=optimizer)
    return path


def transposed_weight(manifest, arrays):
    arrays["module/head/weight"] = arrays["module/head/weight"].T.copy()


def manifest_shape_only(manifest, arrays):
    manifest["arrays"]["module/head/weight"]["shape"] = [64, 2]


def config_mismatch(manifest, arrays):
    manifest["modules"]["lstm"]["config"]["hidden_size"] = 32


def missing_array(manifest, arrays):
    del arrays["module/lstm/bias_hh_l0"]


def unknown_class(manifest, arrays):
    manifest["modules"]["head"]["class"] = "Transformer"


def newer_version(manifest, arrays):
    manifest["version"] = 99


def optimizer_state_for_other_buffer(manifest, arrays):
    arrays["optimizer/lstm.weight_ih_l0/momentum"] = arrays.pop("optimizer/lstm.weight_ih_l0/exp_avg")
    manifest["arrays"]["optimizer/lstm.weight_ih_l0/momentum"] = manifest["arrays"].pop("optimizer/lstm.weight_ih_l0/exp_avg")


@pytest.mark.parametrize("change, message", [
    (transposed_weight, r"entry 'module/head/weight' has shape \(64, 2\).*manifest says shape \(2, 64\)"),
    (manifest_shape_only, r"'module/head/weight' has shape \(2, 64\).*manifest says shape \(64, 2\)"),
    (config_mismatch, r"module 'lstm'.s parameter 'bias_hh_l0'"),
    (missing_array, r"disagree about entry 'module/lstm/bias_hh_l0'"),
    (unknown_class, r"module 'head' has unknown class 'Transformer'"),
    (newer_version, r"checkpoint version 99"),
    (optimizer_state_for_other_buffer, r"optimizer's entry does not load"),
])
def test_inconsistent_files_raise_value_error(saved, change, message):
    rewrite(saved, change)
    with pytest.raises(ValueError, match=message):
        fastrnn.load(saved)


def test_damaged_files_raise_value_error(saved, tmp_path):
    data = saved.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    # A flipped byte inside the LSTM's recurrent weights (found by their first bytes): the zip CRC catches it.
    with np.load(saved) as archive:
        offset = data.find(archive["module/lstm/weight_hh_l0"].tobytes()[:32]) + 100
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(data[:offset] + bytes([data[offset] ^ 0x10]) + data[offset + 1:])
    text = tmp_path / "text.npz"
    text.write_text("not a checkpoint")
    plain = tmp_path / "plain.npz"
    np.savez(plain, weight=np.zeros(3))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __manifest__=np.array([{"format": "fastrnn-checkpoint"}], dtype=object))
    # A header that claims a huge shape must not make the loader try to allocate it.
    huge = tmp_path / "huge.npz"
    with zipfile.ZipFile(saved) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    members["module/head/weight.npy"] = header.getvalue() + bytes(16)
    with zipfile.ZipFile(huge, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    compressed = tmp_path / "compressed.npz"
    with np.load(saved) as archive:
        np.savez_compressed(compressed, **{name: archive[name] for name in archive.files})
    for path in (truncated, flipped, text, plain, pickled, huge, compressed):
        with pytest.raises(ValueError, match=str(path.name)):
            fastrnn.load(path)
    with pytest.raises(FileNotFoundError):
        fastrnn.load(tmp_path / "missing.npz")


KEEP_SAVING = """
import sys, numpy as np, fastrnn
path = sys.argv[1]
big = {"head": fastrnn.Linear(1500, 1500, dtype=np.float64, seed=1)}
print("ready", flush=True)
while True:
    fastrnn.save(path, big, metadata={"version": "new"})
"""


def kill_while_saving(path):
    """Start a process that saves to `path` in a loop, SIGKILL it once a save's temporary file
    exists; returns the temporary files left behind (none if the kill fell between two saves)."""
    child = subprocess.Popen([sys.executable, "-c", KEEP_SAVING, str(path)], stdout=subprocess.PIPE,
                             env=subprocess_env(), text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while not any(name.endswith(".tmp") for name in os.listdir(path.parent)):
            assert time.monotonic() < deadline, "the child never started a save"
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
        child.stdout.close()
    return [name for name in os.listdir(path.parent) if name.endswith(".tmp")]


def test_kill_during_save_leaves_the_old_file_loadable(tmp_path):
    path = tmp_path / "model.npz"
    fastrnn.save(path, {"head": fastrnn.Linear(2, 2, seed=0)}, metadata={"version": "old"})
    # A kill can fall in the instant between two saves; try again then, so the kill lands mid-save.
    for _ in range(5):
        if kill_while_saving(path):
            break
    else:
        pytest.fail("five kills all fell between two saves")
    loaded = fastrnn.load(path)
    assert loaded.metadata["version"] in ("old", "new")
    expected_in = {"old": 2, "new": 1500}[loaded.metadata["version"]]
    assert loaded.modules["head"].in_features == expected_in
    assert loaded.modules["head"].params["weight"].shape == (2, expected_in)
