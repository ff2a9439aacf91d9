"""charlm checkpoints: damaged files give one clean error line, saves survive kill -9 and a full disk."""
import errno
import io
import json
import os
import resource
import signal
import subprocess
import textwrap
import time
import zipfile

import numpy as np
import pytest

from conftest import cli_command, simulate_full_disk
from fastrnn import _io
from fastrnn.__main__ import main
from fastrnn.tools import charlm, charlm_checkpoint

ARCH = {"cell": "lstm", "layers": 2, "hidden": 6, "embed": 4}
VOCAB = "abcdefg\n"


def leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(_io.TEMPORARY_SUFFIX))


def build_checkpoint(path, architecture=ARCH, vocab=VOCAB, seed=0, with_optimizer=True):
    """Save a small CharModel (after one Adam step, so its optimizer state is stored) to `path`."""
    model = charlm.CharModel(len(vocab), architecture, "reference", seed)
    optimizer = charlm.make_optimizer("adam", 1e-3)
    if with_optimizer:
        rng = np.random.default_rng(seed)
        grads = {name: rng.standard_normal(array.shape).astype(array.dtype) for name, array in model.params.items()}
        optimizer.step(model.params, grads)
    charlm.save_checkpoint(path, model, vocab, architecture, optimizer, "adam", 1,
                           {"path": None, "sha256": "0" * 64})
    return path


def arrays_of(path):
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def write_npz(path, arrays):
    with open(path, "wb") as file:
        np.savez(file, **arrays)
    return path


def with_options(arrays, **changes):
    options = json.loads(str(arrays["options"]))
    options.update(changes)
    return {**arrays, "options": np.array(json.dumps(options))}


def replace_member(source, path, member, data):
    """Copy the zip `source` to `path` with the bytes of `member` replaced by `data`."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w") as new:
        for info in old.infolist():
            new.writestr(info.filename, data if info.filename == member else old.read(info))
    return path


def npy_header(shape, descr="<f4"):
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": descr, "fortran_order": False, "shape": shape})
    return stream.getvalue()


def damage(kind, good, tmp):
    """A damaged copy of checkpoint `good` in `tmp`, and a piece of the error message it must give."""
    arrays = arrays_of(good)
    target = tmp / f"{kind.replace(' ', '_')}.npz"
    adam = "optim/rnn.weight_hh_l0/exp_avg"
    if kind == "header claims 2**40 values":
        data = npy_header((2 ** 40,)) + arrays["param/head.bias"].tobytes()
        return replace_member(good, target, "param/head.bias.npy", data), "claims shape (1099511627776,)"
    if kind == "header claims 2**40 values with matching options":
        data = npy_header((4 * 2 ** 20, 2 ** 20)) + arrays["param/rnn.weight_hh_l0"].tobytes()
        changed = write_npz(tmp / "base.npz", with_options(arrays, hidden=2 ** 20))
        return replace_member(changed, target, "param/rnn.weight_hh_l0.npy", data), "claims shape (4194304, 1048576)"
    if kind == "hidden 10**6 in the options":
        return write_npz(target, with_options(arrays, hidden=10 ** 6)), "does not fit this model"
    if kind in ("hidden stored as true", "layers stored as true", "embed stored as 0", "cell unknown"):
        key, value = {"hidden stored as true": ("hidden", True), "layers stored as true": ("layers", True),
                      "embed stored as 0": ("embed", 0), "cell unknown": ("cell", "transformer")}[kind]
        return write_npz(target, with_options(arrays, **{key: value})), "layers an integer 1-3"
    if kind == "step stored as a float":
        return write_npz(target, with_options(arrays, step=1.5)), "step 1.5 is not a non-negative integer"
    if kind == "options not JSON":
        return write_npz(target, {**arrays, "options": np.array("{hidden: 6")}), "not JSON"
    if kind == "corpus record damaged":
        return write_npz(target, with_options(arrays, corpus={"path": 3})), "corpus record"
    if kind == "wrong-shape optimizer buffer":
        return write_npz(target, {**arrays, adam: arrays[adam][:, :-1]}), f"'{adam}' has shape (24, 5)"
    if kind == "negative optimizer step":
        return (write_npz(target, {**arrays, "optim/head.bias/step": np.array(-1)}),
                "'optim/head.bias/step' is negative")
    if kind == "NaN weight":
        weight = arrays["param/rnn.weight_ih_l1"].copy()
        weight[2, 3] = np.nan
        return write_npz(target, {**arrays, "param/rnn.weight_ih_l1": weight}), "non-finite values (NaN or inf) in"
    if kind == "inf optimizer buffer":
        buffer = arrays[adam].copy()
        buffer[0, 0] = np.inf
        return write_npz(target, {**arrays, adam: buffer}), f"non-finite values (NaN or inf) in '{adam}'"
    if kind == "truncated zip":
        data = good.read_bytes()
        target.write_bytes(data[:len(data) // 2])
        return target, "not an intact .npz archive"
    if kind == "float64 weight":
        return (write_npz(target, {**arrays, "param/head.weight": arrays["param/head.weight"].astype(np.float64)}),
                "'param/head.weight' has dtype float64")
    if kind == "integer weight":
        return (write_npz(target, {**arrays, "param/embed.weight": arrays["param/embed.weight"].astype(np.int32)}),
                "'param/embed.weight' has dtype int32")
    if kind == "float vocabulary":
        return write_npz(target, {**arrays, "vocab": arrays["vocab"].astype(np.float32)}), "'vocab' has dtype float32"
    if kind == "vocabulary repeats a character":
        vocab = arrays["vocab"].copy()
        vocab[1] = vocab[0]
        return write_npz(target, {**arrays, "vocab": vocab}), "repeats a character"
    if kind == "missing weight":
        del arrays["param/head.bias"]
        return write_npz(target, arrays), "lacks array 'param/head.bias'"
    if kind == "missing optimizer buffer":
        del arrays["optim/head.bias/exp_avg_sq"]
        return write_npz(target, arrays), "lacks array 'optim/head.bias/exp_avg_sq'"
    if kind == "missing options":
        del arrays["options"]
        return write_npz(target, arrays), "no 'options' array"
    if kind == "extra weight":
        return write_npz(target, {**arrays, "param/rnn.weight_hh_l2": arrays["param/rnn.weight_hh_l1"]}), \
            "unexpected array 'param/rnn.weight_hh_l2'"
    if kind == "extra member":
        return write_npz(target, {**arrays, "notes": np.array("hello")}), "unexpected array 'notes'"
    if kind == "compressed arrays":
        with open(target, "wb") as file:
            np.savez_compressed(file, **arrays)
        return target, "is compressed"
    if kind == "pickled object array":
        with open(target, "wb") as file:
            np.savez(file, **{**arrays, "param/head.bias": np.array([{"a": 1}] * 8, dtype=object)})
        return target, "holds Python objects (pickles)"
    raise AssertionError(kind)


DAMAGE = [
    "header claims 2**40 values", "header claims 2**40 values with matching options", "hidden 10**6 in the options",
    "hidden stored as true", "layers stored as true", "embed stored as 0", "cell unknown", "step stored as a float",
    "options not JSON", "corpus record damaged", "wrong-shape optimizer buffer", "negative optimizer step",
    "NaN weight", "inf optimizer buffer", "truncated zip", "float64 weight", "integer weight", "float vocabulary",
    "vocabulary repeats a character", "missing weight", "missing optimizer buffer", "missing options",
    "extra weight", "extra member", "compressed arrays", "pickled object array",
]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("good") / "good.npz")


def test_the_undamaged_checkpoint_loads(good):
    checkpoint = charlm.load_checkpoint(good)
    assert checkpoint["architecture"] == ARCH and checkpoint["vocab"] == VOCAB and checkpoint["step"] == 1
    assert checkpoint["optim"]["head.bias/step"] == 1


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_checkpoint_gives_one_clean_error_line(kind, good, tmp_path, capsys, monkeypatch):
    path, message = damage(kind, good, tmp_path)
    # The model (where the stored sizes would be allocated) must never be built for a damaged file.
    built = []
    monkeypatch.setattr(charlm.CharModel, "__init__", lambda self, *args: built.append(args))
    code = main(["charlm", "--load", str(path), "--steps", "0", "--sample", "3", "--backend", "reference", "--quiet"])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastrnn charlm: error: "), captured.err
    assert message in lines[0]
    assert built == []


@pytest.mark.parametrize("kind", ["hidden 10**6 in the options", "header claims 2**40 values with matching options"])
def test_a_damaged_checkpoint_fails_cleanly_in_a_process_with_little_memory(kind, good, tmp_path):
    """In a real process whose address space is capped at 4 GiB: any attempt to allocate the
    sizes these files claim would be a MemoryError traceback instead of the one line."""
    path, message = damage(kind, good, tmp_path)
    argv, env = cli_command("charlm", "--load", path, "--steps", 0, "--sample", 3, "--backend", "reference")
    limit = 4 << 30
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_expected_shapes_are_those_of_the_model():
    for cell in charlm.CELLS:
        for layers in (1, 2, 3):
            architecture = {"cell": cell, "layers": layers, "hidden": 5, "embed": 3}
            model = charlm.CharModel(11, architecture, "reference", 0)
            actual = {name: array.shape for name, array in model.params.items()}
            assert charlm_checkpoint.expected_param_shapes(architecture, 11) == actual


def test_loading_then_saving_the_same_path_works(good, tmp_path, capsys):
    path = tmp_path / "same.npz"
    path.write_bytes(good.read_bytes())
    code = main(["charlm", "--load", str(path), "--steps", "0", "--sample", "0", "--save", str(path),
                 "--backend", "reference", "--quiet"])
    assert code == 0, capsys.readouterr()
    before, after = arrays_of(good), arrays_of(path)
    assert sorted(before) == sorted(after)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    assert leftovers(tmp_path) == []


# -- crash safety -------------------------------------------------------------------------


def wait_for_temporary(process, folder, name, timeout=60):
    """Poll until a temporary file of `name` with data in it appears; True if seen before `process` ended."""
    deadline = time.monotonic() + timeout
    prefix = f".{name}."
    while time.monotonic() < deadline:
        for entry in os.scandir(folder):
            if entry.name.startswith(prefix) and entry.name.endswith(_io.TEMPORARY_SUFFIX):
                try:
                    if entry.stat().st_size > 0:
                        return True
                except FileNotFoundError:
                    pass
        if process.poll() is not None:
            return False
        time.sleep(0.0005)
    raise AssertionError(f"no temporary file of {name} appeared within {timeout} s")


def test_kill_9_during_a_large_save_leaves_the_old_checkpoint_loadable(good, tmp_path):
    """A ~50 MB checkpoint is saved over a good one; SIGKILL as soon as its temporary file has data."""
    big = build_checkpoint(tmp_path / "big.npz", {"cell": "lstm", "layers": 2, "hidden": 1024, "embed": 4},
                           with_optimizer=False)
    target = tmp_path / "target.npz"
    original = good.read_bytes()
    argv, env = cli_command("charlm", "--load", big, "--steps", 0, "--sample", 0, "--save", target,
                            "--backend", "reference", "--quiet")
    for attempt in range(3):  # on a very fast disk the save may finish before the poll sees it
        target.write_bytes(original)
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        caught = wait_for_temporary(process, tmp_path, target.name)
        if caught:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=120)
        if caught and process.returncode == -signal.SIGKILL:
            break
    else:
        pytest.fail("the save finished before it could be killed, three times")
    assert target.read_bytes() == original
    assert charlm.load_checkpoint(target)["architecture"] == ARCH


# A child that runs the CLI with os.fsync blocked: it is killed while inside atomic_write, after
# writing all of the new data but before the rename.
BLOCKED_FSYNC = textwrap.dedent("""\
    import os, sys, time
    def fsync(fd):
        time.sleep(600)
    os.fsync = fsync
    from fastrnn.__main__ import main
    sys.exit(main(sys.argv[1:]))
""")

WRITERS = {
    "charlm --save": (lambda ckpt, out: ["charlm", "--load", ckpt, "--steps", 0, "--sample", 0, "--save", out,
                                         "--backend", "reference", "--quiet"]),
    "charlm --json": (lambda ckpt, out: ["charlm", "--load", ckpt, "--steps", 0, "--sample", 5, "--json", out,
                                         "--backend", "reference", "--quiet"]),
    "demo --json": (lambda ckpt, out: ["demo", "--seq-len", 4, "--steps", 2, "--hidden", 4, "--batch", 4,
                                       "--cells", "rnn", "--json", out, "--backend", "reference", "--quiet"]),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_kill_9_inside_every_file_writer_leaves_the_old_file(writer, good, tmp_path):
    out = tmp_path / ("out.npz" if writer.endswith("--save") else "out.json")
    old = b'{"old": "results"}\n' if out.suffix == ".json" else good.read_bytes()
    out.write_bytes(old)
    argv, env = cli_command(*WRITERS[writer](good, out))
    argv[1:3] = ["-c", BLOCKED_FSYNC]  # python -c SCRIPT ARGS instead of python -m fastrnn ARGS
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        assert wait_for_temporary(process, tmp_path, out.name), process.communicate()[1]
    finally:
        process.kill()
        process.wait(timeout=60)
    assert out.read_bytes() == old
    if out.suffix == ".npz":
        assert charlm.load_checkpoint(out)["step"] == 1


def test_a_file_size_limit_fails_the_save_cleanly_and_keeps_the_old_checkpoint(good, tmp_path):
    """A real EFBIG ("File too large") from the kernel: RLIMIT_FSIZE below the checkpoint's size."""
    big = build_checkpoint(tmp_path / "big.npz", {"cell": "gru", "layers": 1, "hidden": 64, "embed": 4})
    target = tmp_path / "target.npz"
    target.write_bytes(good.read_bytes())
    argv, env = cli_command("charlm", "--load", big, "--steps", 0, "--sample", 0, "--save", target,
                            "--backend", "reference", "--quiet")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    limit = 16 * 1024

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    assert os.path.getsize(big) > limit
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, preexec_fn=limit_file_size)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot write checkpoint {target}: {os.strerror(errno.EFBIG)}" in result.stderr
    assert target.read_bytes() == good.read_bytes()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_fails_every_writer_cleanly_and_keeps_the_old_file(where, good, tmp_path, monkeypatch, capsys):

    checkpoint = tmp_path / "ck.npz"
    checkpoint.write_bytes(good.read_bytes())
    old_json = tmp_path / "run.json"
    old_json.write_text('{"old": 1}\n')
    simulate_full_disk(monkeypatch, where)
    code = main(["charlm", "--load", str(good), "--steps", "0", "--sample", "0", "--save", str(checkpoint),
                 "--backend", "reference", "--quiet"])
    assert code == 2
    assert f"cannot write checkpoint {checkpoint}: {os.strerror(errno.ENOSPC)}" in capsys.readouterr().err
    code = main(["charlm", "--load", str(good), "--steps", "0", "--sample", "2", "--json", str(old_json),
                 "--backend", "reference", "--quiet"])
    assert code == 2
    assert f"cannot write --json {old_json}: {os.strerror(errno.ENOSPC)}" in capsys.readouterr().err
    assert checkpoint.read_bytes() == good.read_bytes()
    assert old_json.read_text() == '{"old": 1}\n'
    assert leftovers(tmp_path) == []
