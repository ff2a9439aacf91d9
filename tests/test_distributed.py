"""fastrnn.distributed: the one-process world in this process, and real 2-process jobs via mpiexec.

The mpiexec tests run the scripts in tests/mpi_scripts/ (and `python -m fastrnn charlm`) as
`mpiexec -n 2` jobs; they skip, saying why, where mpi4py or mpiexec is missing
(`pip install mpi4py mpich` provides both).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from conftest import TINY_CHARLM, cli_command
from fastrnn import distributed
from fastrnn.optim import Adam

SCRIPTS = Path(__file__).resolve().parent / "mpi_scripts"
sys.path.insert(0, str(SCRIPTS))
import collectives  # noqa: E402  (tests/mpi_scripts, for the values each rank starts from)
import parity  # noqa: E402

MPI_TIMEOUT = 120  # seconds: a job that hangs fails the test instead of the whole run


@pytest.fixture(autouse=True)
def one_process_world(monkeypatch):
    """No MPI launcher in this process's environment, whatever started pytest."""
    for variable in distributed.LAUNCHER_SIZE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


# -- the one-process world ----------------------------------------------------------------


def test_one_process_world_without_mpi():
    assert distributed.world() is None
    assert (distributed.rank(), distributed.size(), distributed.is_root()) == (0, 1, True)
    assert "mpi4py.MPI" not in sys.modules  # plain `python` never initialises MPI


def test_one_process_world_collectives_change_nothing():
    rng = np.random.default_rng(0)
    grads = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4).astype(np.float32)}
    before = {name: array.copy() for name, array in grads.items()}
    assert distributed.average_gradients(grads, weight=7) == 7.0
    for name in grads:
        assert_array_equal(grads[name], before[name])
    distributed.broadcast_parameters(grads)
    optimizer = Adam(lr=0.1)
    optimizer.step({"w": grads["w"]}, {"w": before["w"]})
    state = optimizer.state_dict()
    distributed.broadcast_optimizer_state(optimizer)
    assert_array_equal(optimizer.state_dict()["w/exp_avg"], state["w/exp_avg"])
    assert distributed.combine_metrics([1.5, 2.0], weight=3) == [1.5, 2.0]
    data = np.arange(12).reshape(3, 4)
    assert distributed.shard(data, axis=1) is not data and np.shares_memory(distributed.shard(data, axis=1), data)
    assert_array_equal(distributed.shard(data, axis=1), data)
    distributed.abort(3)  # returns: there is no job to end


@pytest.mark.parametrize("length, size, expected", [
    (4, 2, [(0, 2), (2, 4)]),
    (5, 2, [(0, 3), (3, 5)]),
    (7, 3, [(0, 3), (3, 5), (5, 7)]),
    (2, 3, [(0, 1), (1, 2), (2, 2)]),
    (0, 2, [(0, 0), (0, 0)]),
])
def test_shard_bounds_are_contiguous_and_differ_by_at_most_one(length, size, expected):
    assert [distributed.shard_bounds(length, rank, size) for rank in range(size)] == expected


@pytest.mark.parametrize("args, error, match", [
    ((5, 2, 2), ValueError, "0 <= rank < size"),
    ((-1, 0, 1), ValueError, "length >= 0"),
    ((5, 0, 0), ValueError, "size >= 1"),
    ((5.0, 0, 1), TypeError, "length must be an integer, got float"),
])
def test_shard_bounds_rejects_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        distributed.shard_bounds(*args)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="weight must be a finite number >= 0, got -1"):
        distributed.average_gradients({"w": np.ones(2)}, weight=-1)
    with pytest.raises(ValueError, match="weight must be a finite number >= 0, got nan"):
        distributed.combine_metrics([1.0], weight=float("nan"))
    with pytest.raises(TypeError, match=r"grads\['w'\] must be a float array, got dtype int64"):
        distributed.average_gradients({"w": np.ones(2, dtype=np.int64)})
    with pytest.raises(TypeError, match=r"grads\['w'\] must be a numeric numpy array, got list"):
        distributed.average_gradients({"w": [1.0]})
    with pytest.raises(ValueError, match="op must be 'mean' or 'sum', got 'max'"):
        distributed.combine_metrics([1.0], op="max")
    with pytest.raises(ValueError, match="flat sequence of scalars, got shape"):
        distributed.combine_metrics([[1.0]])
    with pytest.raises(ValueError, match=r"axis must be in \[-2, 2\) for data of shape \(2, 3\), got 2"):
        distributed.shard(np.zeros((2, 3)), axis=2)


def test_launched_with_several_processes_but_no_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    with pytest.raises(ImportError, match=r"fastrnn\[mpi\]"):
        distributed.rank()


class IdenticalRanks:
    """A stand-in communicator for `copies` ranks that all hold what this one holds.

    Allreduce (in place) multiplies by `copies`, so averaging must give back the input exactly
    when the round trip through the flat buffer is right; it records each call's buffer.
    """

    def __init__(self, copies):
        self.copies, self.calls = copies, []

    def Allreduce(self, sendbuf, recvbuf):
        assert sendbuf is FakeMPI.IN_PLACE
        self.calls.append(recvbuf)
        recvbuf *= self.copies


class FakeMPI:
    IN_PLACE = object()


def test_average_gradients_packs_one_reused_buffer_per_dtype(monkeypatch):
    monkeypatch.setattr(distributed, "_mpi", lambda: FakeMPI)
    rng = np.random.default_rng(1)
    grads = {
        "rnn.weight": rng.standard_normal((4, 3)),
        "head.bias": rng.standard_normal(2).astype(np.float32),
        "embed.weight": rng.standard_normal((2, 5)),
        "rnn.bias": rng.standard_normal(4).astype(np.float32),
    }
    before = {name: array.copy() for name, array in grads.items()}
    comm = IdenticalRanks(3)
    assert distributed.average_gradients(grads, weight=2, comm=comm) == 6.0
    # One collective per dtype, over all of that dtype's elements plus the weight.
    assert sorted((buffer.dtype.name, buffer.size) for buffer in comm.calls) == [("float32", 7), ("float64", 23)]
    for name in grads:
        assert grads[name].dtype == before[name].dtype
        assert_allclose(grads[name], before[name], rtol=1e-6 if grads[name].dtype == np.float32 else 1e-15)
    first = [buffer.base for buffer in comm.calls]
    distributed.average_gradients(grads, weight=2, comm=comm)
    assert all(buffer.base is base for buffer, base in zip(comm.calls[2:], first))  # not reallocated


def test_average_gradients_all_weights_zero_is_an_error(monkeypatch):
    monkeypatch.setattr(distributed, "_mpi", lambda: FakeMPI)
    grads = {"w": np.full(3, np.nan)}
    with pytest.raises(ValueError, match="weights summed over the ranks must be > 0, got 0.0"):
        distributed.average_gradients(grads, weight=0, comm=IdenticalRanks(2))


# -- real jobs: mpiexec -n 2 ----------------------------------------------------------------


def find_mpiexec():
    """The mpiexec beside this Python (pip's mpich puts it in the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def missing_mpi():
    """Why the mpiexec tests cannot run here, or None."""
    try:
        import mpi4py  # noqa: F401  (the package only: MPI starts in the jobs, never in pytest's process)
    except ImportError:
        return "mpi4py is not installed (pip install mpi4py mpich, or the fastrnn[mpi] extra)"
    if MPIEXEC is None:
        return "no mpiexec beside this Python or on PATH (pip install mpich, or the fastrnn[mpi] extra)"
    return None


MPIEXEC = find_mpiexec()
needs_mpi = pytest.mark.skipif(missing_mpi() is not None, reason=str(missing_mpi()))


def mpiexec_command(*args, processes=2):
    """(argv, env) that run `mpiexec -n PROCESSES python ARGS` on this test process's fastrnn."""
    argv, env = cli_command()
    env["OPENBLAS_NUM_THREADS"] = "1"  # two ranks on two cores
    for variable in distributed.LAUNCHER_SIZE_VARIABLES:
        env.pop(variable, None)
    return [MPIEXEC, "-n", str(processes), argv[0], *map(str, args)], env


def mpiexec(*args, processes=2):
    """Run `mpiexec -n PROCESSES python ARGS`; the finished process."""
    argv, env = mpiexec_command(*args, processes=processes)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=MPI_TIMEOUT)


@pytest.fixture(scope="module")
def parity_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("parity") / "two_ranks.npz"
    result = mpiexec(SCRIPTS / "parity.py", out)
    assert result.returncode == 0, result.stderr
    return dict(np.load(out))


@needs_mpi
@pytest.mark.parametrize("cell, batch", parity.CASES)
def test_two_ranks_on_batch_shards_match_one_process_on_whole_batches(parity_results, cell, batch):
    assert parity_results["size"] == 2
    params, norms = parity.train(cell, batch)  # this process: a one-process world
    assert (norms > parity.MAX_NORM).all()  # clipping scaled every step
    assert_allclose(parity_results[f"{cell}/{batch}/norms"], norms, rtol=1e-12)
    for name, array in params.items():
        assert_allclose(parity_results[f"{cell}/{batch}/{name}"], array, rtol=1e-12, atol=1e-14, err_msg=name)


@needs_mpi
def test_two_rank_collectives(tmp_path):
    result = mpiexec(SCRIPTS / "collectives.py", tmp_path / "ranks")
    assert result.returncode == 0, result.stderr
    ranks = [np.load(tmp_path / f"ranks.{rank}.npz") for rank in (0, 1)]
    params, grads = zip(*(collectives.rank_arrays(rank) for rank in (0, 1)))
    optimizer = Adam(lr=0.1)
    optimizer.step(params[0], grads[0])  # what rank 0 holds when it broadcasts
    data = np.arange(50).reshape(10, 5)
    for rank, got in enumerate(ranks):
        assert got["size"] == 2
        for name in params[0]:
            assert_array_equal(got[f"param/{name}"], params[0][name])
            # weights 2 and 3: (2 g0 + 3 g1) / 5
            expected = (2 * grads[0][name].astype(np.float64) + 3 * grads[1][name]) / 5
            assert_allclose(got[f"grad/{name}"], expected, rtol=1e-6 if name == "b" else 1e-15)
        for key, value in optimizer.state_dict().items():
            assert_array_equal(got[f"optim/{key}"], value)
        assert_allclose(got["mean"], [(1 * 1 + 2 * 2) / 3, (1 * 0 + 2 * 10) / 3], rtol=1e-15)
        assert_array_equal(got["total"], [3.0])
        assert got["total_weight"] == 5.0
        assert_array_equal(got["shard"], data[:, :3] if rank == 0 else data[:, 3:])


@needs_mpi
def test_a_rank_that_raises_ends_the_job_with_its_error():
    result = mpiexec(SCRIPTS / "fail.py")  # rank 0 would wait for rank 1 forever
    assert result.returncode != 0
    assert "RuntimeError: rank 1 fails on purpose" in result.stderr


# -- charlm under mpiexec -------------------------------------------------------------------


CHARLM = [*TINY_CHARLM, "--batch", "5", "--sample", "0"]  # 5 streams: shards of 3 and 2


def charlm(processes, *args):
    if processes == 1:
        argv, env = cli_command("charlm", *CHARLM, *args)
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=MPI_TIMEOUT)
    return mpiexec("-m", "fastrnn", "charlm", *CHARLM, *args, processes=processes)


def assert_same_checkpoint(path_a, path_b):
    """Weights and optimizer state agree to float32 rounding (the sums run in another order)."""
    a, b = np.load(path_a), np.load(path_b)
    assert sorted(a.files) == sorted(b.files)
    assert str(a["options"]) == str(b["options"])
    for name in a.files:
        if a[name].dtype.kind == "f":
            assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.fixture(scope="module")
def charlm_runs(tmp_path_factory):
    """1 process and 2 ranks, 12 steps each from the same seed: (folder, {processes: (result, json)})."""
    folder = tmp_path_factory.mktemp("charlm")
    text = folder / "text.txt"
    text.write_text("".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(120)))
    runs = {}
    for processes in (1, 2):
        result = charlm(processes, text, "--steps", "12", "--save", folder / f"ckpt{processes}.npz",
                        "--json", folder / f"run{processes}.json")
        assert result.returncode == 0, result.stderr
        runs[processes] = result, json.loads((folder / f"run{processes}.json").read_text())
    return folder, text, runs


@needs_mpi
def test_charlm_on_two_ranks_trains_as_one_process(charlm_runs):
    folder, _, runs = charlm_runs
    assert_same_checkpoint(folder / "ckpt1.npz", folder / "ckpt2.npz")
    (_, one), (two_result, two) = runs[1], runs[2]
    assert_allclose(two["train_loss"], one["train_loss"], rtol=1e-4)  # the whole batch's loss
    assert_allclose(two["heldout_perplexity"], one["heldout_perplexity"], rtol=1e-4)
    assert two_result.stdout.count("charlm: LSTM") == 1  # rank 0 alone prints
    assert two_result.stdout.count("saved checkpoint") == 1


def resume(folder, text, saved_by, resumed_by):
    """Checkpoint of `saved_by` processes, trained 6 more steps on `resumed_by`: the new checkpoint's path."""
    out = folder / f"resume{saved_by}_by{resumed_by}.npz"
    if not out.exists():
        result = charlm(resumed_by, text, "--load", folder / f"ckpt{saved_by}.npz", "--steps", "6", "--save", out)
        assert result.returncode == 0, result.stderr
    return out


@needs_mpi
@pytest.mark.parametrize("saved_by, resumed_by", [(1, 2), (2, 1)])
def test_charlm_checkpoint_moves_between_one_and_two_ranks(charlm_runs, saved_by, resumed_by):
    folder, text, _ = charlm_runs
    moved = resume(folder, text, saved_by, resumed_by)
    assert json.loads(str(np.load(moved)["options"]))["step"] == 18
    assert_same_checkpoint(moved, resume(folder, text, 1, 1))


@needs_mpi
def test_charlm_error_on_every_rank_ends_the_job_with_exit_code_2(charlm_runs):
    _, text, _ = charlm_runs
    result = charlm(2, text, "--batch", "1", "--steps", "2")
    assert result.returncode == 2, result.stderr
    assert "--batch 1 is smaller than the 2 processes" in result.stderr


@needs_mpi
def test_charlm_ctrl_c_stops_every_rank_at_the_same_step_and_still_saves(charlm_runs):
    folder, text, _ = charlm_runs
    ckpt, json_path = folder / "interrupted.npz", folder / "interrupted.json"
    argv, env = mpiexec_command("-m", "fastrnn", "charlm", text, *CHARLM, "--steps", 100000, "--save", ckpt,
                                "--json", json_path)
    argv.remove("--quiet")  # rank 0's progress lines on stderr tell when training is under way
    # SIGINT may be ignored in a background job; mpiexec gets the default handler back.
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in process.stderr:
        if line.startswith("step 10:"):
            break
    process.send_signal(signal.SIGINT)  # mpiexec passes it on to both ranks
    stdout, stderr = process.communicate(timeout=MPI_TIMEOUT)
    assert process.returncode == 0, stderr
    assert stderr.count("interrupted: training stops here") == 1 and "Traceback" not in stderr
    summary = json.loads(json_path.read_text())
    assert 10 <= summary["steps"] < 100000
    assert json.loads(str(np.load(ckpt)["options"]))["step"] == summary["steps"]
