"""Synchronous data-parallel training over MPI (mpi4py), as Horovod and PyTorch's DDP do it.

Every process (rank) holds a full copy of the model. Each training step, every rank draws the
same global batch, runs forward and backward on its own contiguous shard of it (`shard`), and
`average_gradients` replaces its gradients with the batch-weighted mean over all ranks, so that
clipping and the optimizer step see the gradient of the whole batch and every rank stays in
step with the others. Parameters (and, on resume, the optimizer state) start equal on every
rank through `broadcast_parameters` and `broadcast_optimizer_state`.

    from fastrnn import distributed
    distributed.abort_on_error()                   # one failing rank ends the whole job
    distributed.broadcast_parameters(params)
    distributed.broadcast_optimizer_state(optimizer)
    for x, target in batches:                      # the same global batches on every rank
        x, target = distributed.shard(x, axis=1), distributed.shard(target, axis=1)
        ... forward, loss (the mean over this rank's rows), backward ...
        distributed.average_gradients(grads, weight=x.shape[1])
        clip_grad_norm(grads, 5.0)
        optimizer.step(params, grads)

Run it with `mpiexec -n N python script.py`. mpi4py is an optional extra (`pip install
"fastrnn[mpi]"`, which brings MPICH too) and is imported only when needed: a process that was
not started by an MPI launcher with more than one process is a one-process world in which every
function here is a no-op (`shard` returns everything), so the same script runs unchanged with
plain `python`. Every function takes an optional mpi4py communicator `comm` (default: that world).

Arrays travel through MPI's buffer protocol, never pickled: each collective packs the arrays of
one dtype into one flat buffer that is allocated once and reused. Every rank must pass dicts with
the same names, shapes and dtypes; the order of the keys does not matter.
"""
import contextlib
import math
import numbers
import os
import signal
import sys

import numpy as np

__all__ = [
    "rank", "size", "is_root", "shard_bounds", "shard", "average_gradients", "broadcast_parameters",
    "broadcast_optimizer_state", "combine_metrics", "abort_on_error", "abort", "defer_interrupts",
    "interrupted", "stdout_on_root_only",
]

ROOT = 0
INSTALL_HINT = 'pip install "fastrnn[mpi]" (mpi4py and MPICH)'
# How the common launchers tell a process the number of processes in its job: MPICH's and Intel
# MPI's hydra and Slurm's PMI (PMI_SIZE), Open MPI, MVAPICH.
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

# dtype -> flat buffer, grown on demand and reused by every collective of this process.
_buffers = {}
# Set by the SIGINT handler of `defer_interrupts`.
_interrupt = {"requested": False}


def _mpi():
    """The mpi4py.MPI module, or an ImportError that says how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(f"fastrnn.distributed needs mpi4py to run on several processes: {INSTALL_HINT}; "
                          f"importing it failed with: {error}") from error
    return MPI


def launcher_size():
    """The number of processes the MPI launcher started (from its environment), 1 without one."""
    for variable in LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(variable, "")
        if value.isdigit():
            return int(value)
    return 1


def world():
    """The default communicator: MPI.COMM_WORLD, or None for a one-process world.

    It is COMM_WORLD when an MPI launcher started more than one process (mpi4py is then
    imported, ImportError naming the `fastrnn[mpi]` extra if it is missing) or when this
    process has already imported mpi4py.MPI; otherwise None, and MPI is never touched.

    Returns
    -------
    mpi4py.MPI.Comm or None
    """
    if launcher_size() > 1 or "mpi4py.MPI" in sys.modules:
        return _mpi().COMM_WORLD
    return None


def _comm(comm):
    return world() if comm is None else comm


def _rank_and_size(comm):
    comm = _comm(comm)
    return (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())


def rank(comm=None):
    """This process's rank in `comm`, an int: 0 in a one-process world.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        Default: the world (see `world`).
    """
    return _rank_and_size(comm)[0]


def size(comm=None):
    """The number of processes in `comm`, an int: 1 in a one-process world (see `rank`)."""
    return _rank_and_size(comm)[1]


def is_root(comm=None):
    """True on rank 0 of `comm` (see `rank`), the rank that prints, evaluates and writes files."""
    return rank(comm) == ROOT


def shard_bounds(length, rank, size):
    """The contiguous share [start, stop) of `length` items that rank `rank` of `size` takes.

    The first ``length % size`` ranks take ``length // size + 1`` items and the others
    ``length // size``, in rank order, so the shards cover 0..length exactly once and differ in
    size by at most one. A rank can get an empty shard when ``length < size``.

    Parameters
    ----------
    length : int
        Number of items (e.g. the global batch size), >= 0.
    rank, size : int
        0 <= rank < size.

    Returns
    -------
    (int, int)
        start and stop.
    """
    for name, value in (("length", length), ("rank", rank), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if length < 0 or size < 1 or not 0 <= rank < size:
        raise ValueError(f"need length >= 0, size >= 1 and 0 <= rank < size, got length={length}, "
                         f"rank={rank}, size={size}")
    base, extra = divmod(int(length), int(size))
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def shard(data, axis=0, comm=None):
    """This rank's contiguous shard of `data` along `axis` (a view; see `shard_bounds`).

    Parameters
    ----------
    data : numpy.ndarray
        Any array, e.g. a global batch (T, B, ...) with ``axis=1``.
    axis : int
        The axis to split.
    comm : mpi4py.MPI.Comm, optional
        Default: the world. In a one-process world `data` comes back whole.

    Returns
    -------
    numpy.ndarray
        A view of `data` with ``shard_bounds(data.shape[axis], rank, size)`` along `axis`.
    """
    if not isinstance(data, np.ndarray):
        raise TypeError(f"data must be a numpy array, got {type(data).__name__}")
    if not -data.ndim <= axis < data.ndim:
        raise ValueError(f"axis must be in [{-data.ndim}, {data.ndim}) for data of shape {data.shape}, got {axis}")
    start, stop = shard_bounds(data.shape[axis], rank(comm), size(comm))
    index = [slice(None)] * data.ndim
    index[axis] = slice(start, stop)
    return data[tuple(index)]


def _buffer(dtype, count):
    """A reused flat buffer of `count` elements of `dtype` (contents undefined)."""
    buffer = _buffers.get(dtype)
    if buffer is None or buffer.size < count:
        buffer = _buffers[dtype] = np.empty(count, dtype=dtype)
    return buffer[:count]


def _by_dtype(arrays, what):
    """dtype -> [(name, array)] in name order, the dtypes in a fixed order, after type checks."""
    groups = {}
    for name in sorted(arrays):
        array = arrays[name]
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
            kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
            raise TypeError(f"{what}[{name!r}] must be a numeric numpy array, got {kind}")
        groups.setdefault(array.dtype, []).append((name, array))
    return {dtype: groups[dtype] for dtype in sorted(groups, key=lambda dtype: dtype.str)}


def _pack(buffer, entries, weight=1.0):
    """Copy the arrays, times `weight`, one after the other into the flat `buffer`."""
    offset = 0
    for _, array in entries:
        packed = buffer[offset:offset + array.size].reshape(array.shape)
        if weight == 1:
            np.copyto(packed, array)
        elif weight:
            np.multiply(array, weight, out=packed)
        else:
            packed.fill(0)  # not 0 * array: an ignored shard's inf or NaN must not spread
        offset += array.size


def _unpack(buffer, entries):
    """Copy consecutive pieces of the flat `buffer` back into the arrays, in place."""
    offset = 0
    for _, array in entries:
        np.copyto(array, buffer[offset:offset + array.size].reshape(array.shape))
        offset += array.size


def _check_weight(weight):
    valid = not isinstance(weight, bool) and isinstance(weight, numbers.Real) and math.isfinite(weight)
    if not (valid and weight >= 0):
        raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")


def average_gradients(grads, weight=1.0, comm=None):
    """Replace every gradient, in place, by its `weight`-weighted mean over the ranks.

    With each rank's gradients those of the MEAN loss over its own shard and `weight` the
    number of rows in that shard, the result on every rank is the gradient of the mean loss
    over the whole batch, also when the shards differ in size (a plain mean of the ranks'
    gradients would be that only for equal shards). One ``Allreduce`` per dtype in `grads`: the
    weighted gradients and the weight travel together in one flat buffer, summed in place.

    Parameters
    ----------
    grads : dict of str -> numpy.ndarray
        Float arrays, updated in place; the same names, shapes and dtypes on every rank.
    weight : float
        This rank's weight, finite and >= 0 (0 for an empty shard: its gradients are ignored,
        even if not finite). The weights summed over the ranks must be > 0.
    comm : mpi4py.MPI.Comm, optional
        Default: the world. In a one-process world nothing changes.

    Returns
    -------
    float
        The total weight over the ranks.
    """
    _check_weight(weight)
    groups = _by_dtype(grads, "grads")
    for dtype, entries in groups.items():
        if dtype.kind != "f":
            raise TypeError(f"grads[{entries[0][0]!r}] must be a float array, got dtype {dtype}")
    comm = _comm(comm)
    if comm is None:
        return float(weight)
    MPI = _mpi()
    total = float(weight)
    for dtype, entries in groups.items():
        count = sum(array.size for _, array in entries)
        buffer = _buffer(dtype, count + 1)
        _pack(buffer, entries, weight)
        buffer[count] = weight
        comm.Allreduce(MPI.IN_PLACE, buffer)
        total = float(buffer[count])
        if not total > 0:
            raise ValueError(f"the weights summed over the ranks must be > 0, got {total}")
        buffer[:count] /= buffer[count]
        _unpack(buffer[:count], entries)
    return total


def _layout(arrays):
    return [(name, array.shape, array.dtype.str) for name, array in sorted(arrays.items())]


def _broadcast_arrays(arrays, comm, root):
    """Copy root's arrays into `arrays` on every rank, one ``Bcast`` per dtype."""
    for dtype, entries in _by_dtype(arrays, "arrays").items():
        buffer = _buffer(dtype, sum(array.size for _, array in entries))
        if comm.Get_rank() == root:
            _pack(buffer, entries)
        comm.Bcast(buffer, root=root)
        if comm.Get_rank() != root:
            _unpack(buffer, entries)


def broadcast_parameters(params, comm=None, root=ROOT):
    """Copy rank `root`'s parameters into every rank's arrays, in place.

    Parameters
    ----------
    params : dict of str -> numpy.ndarray
        Writable arrays with the same names, shapes and dtypes on every rank (checked: a rank
        whose arrays differ from the root's raises ValueError naming the first difference, and
        so do all the others, rather than hang).
    comm : mpi4py.MPI.Comm, optional
        Default: the world. In a one-process world nothing changes.
    root : int
        The rank whose values everyone takes.
    """
    comm = _comm(comm)
    if comm is None:
        return
    expected = comm.bcast(_layout(params), root=root)  # names and shapes only, no array data
    mine = _layout(params)
    difference = next((f"{theirs} on rank {root}, {ours} here" for theirs, ours in zip(expected, mine)
                       if theirs != ours), None)
    if difference is None and len(expected) != len(mine):
        difference = f"{len(expected)} arrays on rank {root}, {len(mine)} here"
    if comm.allreduce(difference is not None):
        raise ValueError(f"broadcast_parameters: the ranks' parameters differ: "
                         f"{difference or 'on another rank'}")
    _broadcast_arrays(params, comm, root)


def broadcast_optimizer_state(optimizer, comm=None, root=ROOT):
    """Give every rank's optimizer the state of rank `root`'s (e.g. after `root` resumed).

    The root's ``optimizer.state_dict()`` (its names, shapes and dtypes first, then the arrays)
    is loaded with ``load_state_dict`` on the other ranks, whatever state they had; an empty
    state (an optimizer that has not stepped yet) empties theirs.

    Parameters
    ----------
    optimizer : fastrnn.optim.Optimizer
        The same kind and hyperparameters on every rank.
    comm, root
        As for `broadcast_parameters`.
    """
    comm = _comm(comm)
    if comm is None:
        return
    state = optimizer.state_dict() if comm.Get_rank() == root else None
    layout = comm.bcast(None if state is None else _layout(state), root=root)
    if state is None:
        state = {name: np.empty(shape, dtype=np.dtype(dtype)) for name, shape, dtype in layout}
    _broadcast_arrays(state, comm, root)
    if comm.Get_rank() != root:
        optimizer.load_state_dict(state)


def combine_metrics(values, weight=1.0, op="mean", comm=None):
    """Combine scalars across the ranks with one ``Allreduce``: weighted means or sums.

    Parameters
    ----------
    values : sequence of float
        This rank's scalars (e.g. its mean loss, a count, a 0/1 flag); the same length on every
        rank. NaN propagates.
    weight : float
        For ``op="mean"``: this rank's weight (e.g. its shard's rows), finite and >= 0.
    op : {"mean", "sum"}
        "mean": sum over ranks of weight * value divided by the summed weights (a 0/1 flag
        comes out > 0 when any rank with weight > 0 set it). "sum": the plain sums.
    comm : mpi4py.MPI.Comm, optional
        Default: the world. In a one-process world the values come back as floats.

    Returns
    -------
    list of float
    """
    if op not in ("mean", "sum"):
        raise ValueError(f"op must be 'mean' or 'sum', got {op!r}")
    _check_weight(weight)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be a flat sequence of scalars, got shape {values.shape}")
    comm = _comm(comm)
    if comm is None:
        return values.tolist()
    MPI = _mpi()
    scale = weight if op == "mean" else 1.0
    combined = np.append(values * scale if scale else np.zeros_like(values), scale)  # 0, not 0 * NaN
    comm.Allreduce(MPI.IN_PLACE, combined)
    if op == "sum":
        return combined[:-1].tolist()
    if not combined[-1] > 0:
        raise ValueError(f"the weights summed over the ranks must be > 0, got {combined[-1]}")
    return (combined[:-1] / combined[-1]).tolist()


def abort(code=1, comm=None):
    """End every rank of a job with more than one process, with exit code `code`.

    Call it where one rank stops on an error the others cannot know of: they would otherwise
    wait forever in their next collective. Flushes stdout and stderr first, so what this rank
    printed is shown. Returns (does nothing) in a one-process world.

    Parameters
    ----------
    code : int
        The exit code of the job (mpiexec's).
    comm : mpi4py.MPI.Comm, optional
        Default: the world.
    """
    comm = _comm(comm)
    if comm is None or comm.Get_size() == 1:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    comm.Abort(code)


def abort_on_error(comm=None):
    """Make an uncaught exception on any rank print its traceback and end the whole job.

    Installs a ``sys.excepthook`` that shows the exception as usual and then calls `abort`
    with exit code 1 (as ``python -m mpi4py`` does); without it the other ranks would wait in
    their next collective forever. Does nothing in a one-process world.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        Default: the world.
    """
    comm = _comm(comm)
    if comm is None or comm.Get_size() == 1:
        return
    previous = sys.excepthook

    def show_and_abort(kind, value, traceback):
        previous(kind, value, traceback)
        abort(1, comm)

    sys.excepthook = show_and_abort


def defer_interrupts(comm=None):
    """In a job of several processes, make Ctrl-C set a flag (see `interrupted`) instead of raising.

    mpiexec passes Ctrl-C (SIGINT) on to every rank, and each would raise KeyboardInterrupt at
    a different point, some while others wait in a collective for them: a hang. With this, the
    training loop reads `interrupted()` and the ranks agree to stop through a collective (e.g.
    a flag in `combine_metrics`). A second Ctrl-C makes mpiexec kill the job. Does nothing in a
    one-process world, where Ctrl-C keeps raising KeyboardInterrupt. Call it from the main thread.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        Default: the world.
    """
    if size(comm) == 1:
        return

    def request_stop(signum, frame):
        _interrupt["requested"] = True

    signal.signal(signal.SIGINT, request_stop)


def interrupted():
    """True once Ctrl-C arrived after `defer_interrupts` (always False without it).

    Returns
    -------
    bool
    """
    return _interrupt["requested"]


@contextlib.contextmanager
def stdout_on_root_only(comm=None):
    """A context in which only the root rank's stdout is shown; the others' goes to os.devnull.

    stderr (errors, warnings) is left alone on every rank.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        Default: the world. In a one-process world nothing changes.
    """
    if is_root(comm):
        yield
        return
    with open(os.devnull, "w", encoding="utf-8") as devnull, contextlib.redirect_stdout(devnull):
        yield
