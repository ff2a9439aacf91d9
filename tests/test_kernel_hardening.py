"""The compiled kernels under hostile input (issue 11): NaN propagated as the reference does,
padding that does not matter whatever it holds, every size checked against the arrays, sizes
BLAS's 32-bit ints cannot take refused, Ctrl-C during a pass, fork during a pass."""
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastrnn
from fastrnn._kernels import scan, threads
from cases import CASES, kernels, make_layer, make_params, num_states, reference

pytestmark = [
    # NaN and inf are fed on purpose: NumPy's warnings about them (in the reference) are expected.
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]
BACKENDS = ("cython", "reference")
DTYPES = (np.float32, np.float64)
RTOL = {np.float32: 2e-4, np.float64: 1e-9}
T, B, D, H = 5, 3, 4, 6


def pass_through(layer, x, dy, state=None, dstate=None, lengths=None):
    """y, state_n, dx, dstate0 and the gradients of one forward/backward, as a flat list."""
    layer.zero_grad()
    y, state_n = layer(x, state, lengths=lengths)
    dx, dstate0 = layer.backward(dy, dstate)
    parts = lambda s: list(s) if isinstance(s, tuple) else [s]  # noqa: E731
    return [y, *parts(state_n), dx, *parts(dstate0)] + [layer.grads[k].copy() for k in sorted(layer.grads)]


def assert_same(ours, ref, dtype, exact=False):
    for a, b in zip(ours, ref, strict=True):
        assert_array_equal(np.isnan(a), np.isnan(b))
        if exact:
            assert_array_equal(a, b)
        else:
            assert_allclose(a, b, rtol=RTOL[dtype], atol=RTOL[dtype], equal_nan=True)


def layers(case, dtype, **options):
    return [make_layer(case, D, H, dtype=dtype, backend=backend, seed=3, **options) for backend in BACKENDS]


# -- 1. NaN propagates through every kernel as through the reference ------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", ["x", "weight_hh", "dy", "state"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_nan_propagates_as_in_the_reference(case, where, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    state = tuple(rng.standard_normal((1, B, H)).astype(dtype) for _ in range(num_states(CASES[case].cell)))
    results = []
    for layer in layers(case, dtype):
        xs, dys, states = x.copy(), dy.copy(), tuple(s.copy() for s in state)
        if where == "x":
            xs[2, 1, 0] = np.nan
        elif where == "weight_hh":
            layer.params["weight_hh_l0"][1, 2] = np.nan
        elif where == "dy":
            dys[:, 1] = np.nan  # every step: where a ReLU unit is off too (its derivative 0)
        else:
            states[0][0, 1, 2] = np.nan
        results.append(pass_through(layer, xs, dys, states if len(states) > 1 else states[0]))
    assert any(np.isnan(r).any() for r in results[1])
    assert_same(*results, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_keeps_nan_and_gives_zero_for_negative_numbers(dtype):
    rng = np.random.default_rng(2)
    layer = fastrnn.RNN(D, H, nonlinearity="relu", dtype=dtype, backend="cython", seed=0)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    x[0, 0, 0] = np.nan
    y, _ = layer(x)
    assert np.isnan(y[:, 0]).all() and not np.isnan(y[:, 1:]).any()
    assert (y[:, 1:] >= 0).all() and (y[:, 1:] == 0).any()


# -- 4. NaN/inf in the padding does not matter ---------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_padding_does_not_matter_whatever_it_holds(case, backend, bidirectional, poison, dtype):
    rng = np.random.default_rng(4)
    lengths = np.array([T, 2, 4])
    dirs = 2 if bidirectional else 1
    x = rng.standard_normal((T, B, D)).astype(dtype)
    dy = rng.standard_normal((T, B, dirs * H)).astype(dtype)
    padding = np.arange(T)[:, None] >= lengths[None, :]
    x[padding], dy[padding] = 0, 0
    poisoned_x, poisoned_dy = x.copy(), dy.copy()
    poisoned_x[padding], poisoned_dy[padding] = poison, poison
    layer = make_layer(case, D, H, num_layers=2, bidirectional=bidirectional, dtype=dtype,
                       backend=backend, seed=5)
    clean = pass_through(layer, x, dy, lengths=lengths)
    poisoned = pass_through(layer, poisoned_x, poisoned_dy, lengths=lengths)
    assert all(np.isfinite(r).all() for r in clean)
    assert_same(poisoned, clean, dtype, exact=True)
    assert np.isnan(poisoned_x).any() or np.isinf(poisoned_x).any()  # the caller's arrays unchanged


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["lstm", "lstm_peephole", "lstm_nf"])
def test_padding_does_not_matter_with_a_projection(case, backend, dtype):
    rng = np.random.default_rng(8)
    lengths, P = np.array([T, 2, 4]), 2
    x = rng.standard_normal((T, B, D)).astype(dtype)
    dy = rng.standard_normal((T, B, 2 * P)).astype(dtype)
    padding = np.arange(T)[:, None] >= lengths[None, :]
    x[padding], dy[padding] = 0, 0
    poisoned_x, poisoned_dy = x.copy(), dy.copy()
    poisoned_x[padding], poisoned_dy[padding] = np.nan, np.inf
    layer = make_layer(case, D, H, proj_size=P, bidirectional=True, dtype=dtype, backend=backend, seed=5)
    clean = pass_through(layer, x, dy, lengths=lengths)
    poisoned = pass_through(layer, poisoned_x, poisoned_dy, lengths=lengths)
    assert all(np.isfinite(r).all() for r in clean)
    assert_same(poisoned, clean, dtype, exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_cells_ignore_nan_in_the_padding(case, reverse, dtype):
    """Called directly (without the layer driver, which zeroes the padding): NaN in padded x
    must not reach dx, dstate0 or the gradients (0 * NaN)."""
    rng = np.random.default_rng(6)
    cell, options, _ = CASES[case]
    module = reference(cell)
    params = make_params(case, rng, dtype, D, H)
    lengths = np.array([T, 2, 4])
    state0 = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in range(num_states(cell)))
    x = rng.standard_normal((T, B, D)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    poisoned = x.copy()
    poisoned[np.arange(T)[:, None] >= lengths[None, :]] = np.nan
    outputs = []
    for xs in (x, poisoned):
        grads = {k: None if v is None else np.zeros_like(v) for k, v in params.items()}
        y, state_n, cache = module.forward(xs, state0, params, lengths, reverse, **options)
        dx, dstate0 = module.backward(dy, state_n, cache, grads)
        outputs.append([y, *state_n, dx, *dstate0] + [g for g in grads.values() if g is not None])
    assert all(np.isfinite(o).all() for o in outputs[1])
    assert_same(outputs[1], outputs[0], dtype, exact=True)


# -- 2. every size checked against the arrays, at the kernel entry points -------------------------

def kernel_problem(case, dtype=np.float32):
    rng = np.random.default_rng(7)
    cell, options, _ = CASES[case]
    params = make_params(case, rng, dtype, D, H)
    state0 = tuple(np.zeros((B, H), dtype) for _ in range(num_states(cell)))
    x = rng.standard_normal((T, B, D)).astype(dtype)
    grads = {k: None if v is None else np.zeros_like(v) for k, v in params.items()}
    return kernels(cell), options, params, state0, x, grads


def forward_mismatches(case):
    """(what, change of (params, state0, x, lengths), exception, message pattern)."""
    _, _, params, state0, x, _ = kernel_problem(case)
    G = params["w_hh"].shape[0]
    other_w_hh = np.zeros((G * 2, H * 2), np.float32)
    yield "x of another D", lambda p, s, x, l: (p, s, x[:, :, :2].copy(), l), ValueError, r"params\['w_ih'\]"
    yield "w_hh of another H", lambda p, s, x, l: ({**p, "w_hh": other_w_hh}, s, x, l), ValueError, r"params\[.w_ih.\]"
    yield "w_hh with G not a multiple of H", lambda p, s, x, l: ({**p, "w_hh": np.zeros((G + 1, H), np.float32)}, s, x, l), ValueError, r"params\['w_hh'\]"
    yield "w_hh of float64", lambda p, s, x, l: ({**p, "w_hh": p["w_hh"].astype(np.float64)}, s, x, l), TypeError, r"params\['w_hh'\]"
    yield "w_hh missing", lambda p, s, x, l: ({k: v for k, v in p.items() if k != "w_hh"}, s, x, l), KeyError, "w_hh"
    yield "params not a dict", lambda p, s, x, l: (None, s, x, l), TypeError, "params"
    yield "w_ih transposed", lambda p, s, x, l: ({**p, "w_ih": np.asfortranarray(p["w_ih"])}, s, x, l), ValueError, "C-contiguous"
    yield "one bias None", lambda p, s, x, l: ({**p, "b_hh": None}, s, x, l), ValueError, "b_hh"
    yield "bias of another size", lambda p, s, x, l: ({**p, "b_ih": np.zeros(G + 1, np.float32)}, s, x, l), ValueError, "b_ih"
    yield "x as a list", lambda p, s, x, l: (p, s, x.tolist(), l), TypeError, "x"
    yield "x of float16", lambda p, s, x, l: (p, s, x.astype(np.float16), l), TypeError, "x"
    yield "x 2-D", lambda p, s, x, l: (p, s, x[0], l), ValueError, "x"
    yield "x strided", lambda p, s, x, l: (p, s, np.repeat(x, 2, axis=1)[:, ::2], l), ValueError, "x must be C-contiguous"
    yield "x without steps", lambda p, s, x, l: (p, s, x[:0], l), ValueError, "T"
    yield "state of another B", lambda p, s, x, l: (p, tuple(a[:1] for a in s), x, l), ValueError, r"state0\[0\]"
    yield "state missing a part", lambda p, s, x, l: (p, s[:-1] + (None,), x, l), TypeError, "state0"
    yield "state not a tuple", lambda p, s, x, l: (p, None, x, l), TypeError, "state0"
    yield "lengths of int32", lambda p, s, x, l: (p, s, x, np.full(B, T, np.int32)), TypeError, "lengths"
    yield "lengths of another B", lambda p, s, x, l: (p, s, x, np.full(B + 1, T)), ValueError, "lengths"
    yield "lengths past T", lambda p, s, x, l: (p, s, x, np.full(B, T + 1)), ValueError, "lengths"
    yield "lengths of 0", lambda p, s, x, l: (p, s, x, np.zeros(B, np.int64)), ValueError, "lengths"
    if "w_peep" in params:
        yield "w_peep of another shape", lambda p, s, x, l: ({**p, "w_peep": np.zeros((5, H), np.float32)}, s, x, l), ValueError, "w_peep"


@pytest.mark.parametrize("case", sorted(CASES))
def test_kernel_forward_checks_every_argument(case):
    module, options, params, state0, x, _ = kernel_problem(case)
    for what, change, error, pattern in forward_mismatches(case):
        p, s, xs, lengths = change(params, state0, x, None)
        with pytest.raises(error, match=pattern):
            module.forward(xs, s, p, lengths, False, **options)
            pytest.fail(f"{what}: accepted")


def backward_mismatches(case):
    module, options, params, state0, x, grads = kernel_problem(case)
    G = params["w_hh"].shape[0]
    dy = np.ones((T, B, H), np.float32)
    read_only = np.zeros_like(grads["w_ih"])
    read_only.setflags(write=False)
    yield "cache None", lambda c, dy, ds, g: (None, dy, ds, g), TypeError, "cache"
    yield "cache a tuple", lambda c, dy, ds, g: ((1, 2), dy, ds, g), TypeError, "cache"
    yield "dy of another H", lambda c, dy, ds, g: (c, dy[:, :, :2].copy(), ds, g), ValueError, "dy"
    yield "dy of float64", lambda c, dy, ds, g: (c, dy.astype(np.float64), ds, g), TypeError, "dy"
    yield "dy strided", lambda c, dy, ds, g: (c, np.repeat(dy, 2, axis=0)[::2], ds, g), ValueError, "dy"
    yield "dstate of another B", lambda c, dy, ds, g: (c, dy, tuple(a[:1] for a in ds), g), ValueError, "dstate_n"
    yield "grads w_ih read-only", lambda c, dy, ds, g: (c, dy, ds, {**g, "w_ih": read_only}), ValueError, r"grads\['w_ih'\]"
    yield "grads w_hh of another size", lambda c, dy, ds, g: (c, dy, ds, {**g, "w_hh": np.zeros((G, H + 1), np.float32)}), ValueError, r"grads\['w_hh'\]"
    yield "grads without biases", lambda c, dy, ds, g: (c, dy, ds, {**g, "b_ih": None}), ValueError, "b_ih"
    yield "grads not a dict", lambda c, dy, ds, g: (c, dy, ds, [1]), TypeError, "grads"


@pytest.mark.parametrize("case", sorted(CASES))
def test_kernel_backward_checks_every_argument(case):
    module, options, params, state0, x, grads = kernel_problem(case)
    for what, change, error, pattern in backward_mismatches(case):
        y, state_n, cache = module.forward(x, state0, params, None, False, **options)
        c, dy, dstate, g = change(cache, np.ones_like(y), state_n, grads)
        with pytest.raises(error, match=pattern):
            module.backward(dy, dstate, c, g)
            pytest.fail(f"{what}: accepted")


@pytest.mark.parametrize("case", sorted(CASES))
def test_kernel_backward_refuses_inputs_changed_in_place_since_forward(case):
    module, options, params, state0, x, grads = kernel_problem(case)
    y, state_n, cache = module.forward(x, state0, params, None, False, **options)
    x.shape = (B, T, D)  # the same memory, read as other sizes
    with pytest.raises(ValueError, match="x"):
        module.backward(np.ones_like(y), state_n, cache, grads)


def test_kernel_backward_refuses_the_cache_of_another_cell():
    lstm, _, params, state0, x, _ = kernel_problem("lstm")
    gru, _, gru_params, gru_state0, _, gru_grads = kernel_problem("gru_reset_after")
    y, state_n, cache = lstm.forward(x, state0, params, None, False)
    with pytest.raises(TypeError, match="cache"):
        gru.backward(np.ones_like(y), state_n[:1], cache, gru_grads)


def test_rnn_kernel_refuses_an_unknown_nonlinearity():
    module, _, params, state0, x, _ = kernel_problem("rnn_tanh")
    with pytest.raises(ValueError, match="nonlinearity"):
        module.forward(x, state0, params, None, False, nonlinearity="sigmoid")


def test_lstm_kernel_checks_the_projection_against_the_other_sizes():
    module, _, params, state0, x, grads = kernel_problem("lstm")
    P = 2
    w_hr = np.zeros((P, H), np.float32)
    projected = {**params, "w_hh": np.zeros((4 * H, P), np.float32), "w_hr": w_hr}
    h0 = np.zeros((B, P), np.float32)
    y, _, cache = module.forward(x, (h0, state0[1]), projected, None, False)
    assert y.shape == (T, B, P)
    with pytest.raises(ValueError, match=r"state0\[0\] must have shape \(3, 2\)"):
        module.forward(x, state0, projected, None, False)  # h0 of H columns, not P
    with pytest.raises(ValueError, match=r"params\['w_hh'\] must have shape \(24, 2\)"):
        module.forward(x, (h0, state0[1]), {**projected, "w_hh": params["w_hh"]}, None, False)
    with pytest.raises(ValueError, match=r"params\['w_hh'\] of the LSTM cell .* H = 5"):
        module.forward(x, (h0, state0[1]), {**projected, "w_hr": np.zeros((P, H - 1), np.float32)},
                       None, False)
    with pytest.raises(ValueError, match=r"params\['w_hr'\] must be a 2-D array"):
        module.forward(x, (h0, state0[1]), {**projected, "w_hr": np.zeros(H, np.float32)}, None, False)
    with pytest.raises(TypeError, match=r"params\['w_hr'\] must be float32"):
        module.forward(x, (h0, state0[1]), {**projected, "w_hr": w_hr.astype(np.float64)}, None, False)
    projected_grads = {**grads, "w_hh": np.zeros((4 * H, P), np.float32), "w_hr": np.zeros((P, H), np.float32)}
    dy, dstate = np.ones((T, B, P), np.float32), (np.zeros((B, P), np.float32), np.zeros((B, H), np.float32))
    with pytest.raises(ValueError, match=r"grads\['w_hr'\] must have shape \(2, 6\)"):
        module.backward(dy, dstate, cache, {**projected_grads, "w_hr": np.zeros((H, P), np.float32)})
    with pytest.raises(TypeError, match=r"grads\['w_hr'\] must be a float32 array"):
        module.backward(dy, dstate, cache, {k: v for k, v in projected_grads.items() if k != "w_hr"})
    with pytest.raises(ValueError, match="dy must have shape"):
        module.backward(np.ones((T, B, H), np.float32), dstate, cache, projected_grads)
    dx, _ = module.backward(dy, dstate, cache, projected_grads)
    assert dx.shape == (T, B, D)


@pytest.mark.parametrize("case", sorted(CASES))
def test_kernel_backward_checks_the_norms_record(case):
    module, options, params, state0, x, grads = kernel_problem(case)
    parts = len(state0)
    for norms, error, pattern in [(np.zeros((parts, T + 1)), ValueError, r"norms must have shape"),
                                  (np.zeros((parts, T), np.float32), TypeError, "norms must be float64"),
                                  (np.zeros((parts + 1, T))[:parts], None, None),
                                  ([[0.0] * T] * parts, TypeError, "norms must be a float64 array")]:
        y, state_n, cache = module.forward(x, state0, params, None, False, **options)
        if error is None:  # a valid record: filled in, finite
            module.backward(np.ones_like(y), state_n, cache, grads, norms)
            assert (norms > 0).all()
            continue
        with pytest.raises(error, match=pattern):
            module.backward(np.ones_like(y), state_n, cache, grads, norms)


@pytest.mark.parametrize("case", sorted(CASES))
def test_kernel_without_keep_gives_no_cache_for_backward_or_gate_statistics(case):
    module, options, params, state0, x, grads = kernel_problem(case)
    y, state_n, cache = module.forward(x, state0, params, None, False, keep=False, **options)
    assert cache is None
    with pytest.raises(TypeError, match="cache must be what this module's forward returned with keep=True"):
        module.backward(np.ones_like(y), state_n, cache, grads)
    with pytest.raises(TypeError, match="cache"):
        module.gate_activations(cache)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_with_changed_sizes_raises_instead_of_overflowing(dtype):
    # The crashes of issue 11 item 3, with the Python-side guards bypassed.
    layer = fastrnn.LSTM(4, 8, dtype=dtype, backend="cython")
    object.__setattr__(layer, "hidden_size", 512)  # the size of c
    with pytest.raises(ValueError, match=r"state0\[1\]"):
        layer(np.ones((3, 2, 4), dtype))
    object.__setattr__(layer, "output_size", 512)  # the size of h
    with pytest.raises(ValueError, match=r"state0\[0\]"):
        layer(np.ones((3, 2, 4), dtype))
    layer = fastrnn.LSTM(4, 8, dtype=dtype, backend="cython")
    object.__setattr__(layer, "input_size", 4000)
    with pytest.raises(ValueError, match=r"params\['w_ih'\]"):
        layer(np.ones((3, 2, 4000), dtype))
    layer = fastrnn.LSTM(4, 8, dtype=dtype, backend="cython")
    layer._unit_params[0]["w_hh"] = np.zeros((64, 16), dtype)
    with pytest.raises(ValueError):
        layer(np.ones((3, 2, 4), dtype))


# -- 3. sizes BLAS's 32-bit ints cannot take are refused before anything is allocated ------------

def test_size_check_refuses_past_the_limit():
    scan.check_sizes(10, 10, 4, 4, 16, limit=100)
    with pytest.raises(ValueError, match=r"T\*B .* is 101"):
        scan.check_sizes(101, 1, 4, 4, 16, limit=100)
    with pytest.raises(ValueError, match="D .* is 101"):
        scan.check_sizes(1, 1, 101, 4, 16, limit=100)
    with pytest.raises(ValueError, match="gate rows .* is 101"):
        scan.check_sizes(1, 1, 4, 4, 101, limit=100)
    with pytest.raises(ValueError, match="B .* at least 1"):
        scan.check_sizes(1, 0, 4, 4, 16, limit=100)


@pytest.mark.parametrize("case", sorted(CASES))
def test_kernels_refuse_more_rows_than_blas_takes(case):
    """x of 2**31 rows, as a zero-stride view of one value (nothing of that size is allocated):
    refused for its size, before its layout or anything else is looked at."""
    module, options, params, state0, _, _ = kernel_problem(case)
    big_batch = 2**31 // T + 1
    x = np.broadcast_to(np.zeros((1, 1, D), np.float32), (T, big_batch, D))
    state0 = tuple(np.broadcast_to(np.zeros((1, H), np.float32), (big_batch, H)) for _ in state0)
    with pytest.raises(ValueError, match=rf"T\*B \(steps x batch\) is {T * big_batch}, more than the 2147483647"):
        module.forward(x, state0, params, None, False, **options)


def test_kernels_refuse_more_gate_rows_than_blas_takes():
    module, _, params, state0, x, _ = kernel_problem("lstm")
    huge_h = 2**29
    w_hh = np.broadcast_to(np.zeros((1, 1), np.float32), (4 * huge_h, huge_h))
    with pytest.raises(ValueError, match="gate rows"):
        module.forward(x, state0, {**params, "w_hh": w_hh}, None, False)


# -- 5. Ctrl-C during a pass ----------------------------------------------------------------------

def run_script(script, timeout=300, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **env},
                          cwd=os.path.dirname(os.path.dirname(fastrnn.__file__)))


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_ctrl_c_stops_a_pass_and_leaves_the_layer_usable(direction):
    # One pass of several seconds (one thread: B = 8; 3000 steps of a 1024-unit LSTM, seconds
    # even on an idle machine), interrupted 0.3 s in: without the signal checks,
    # KeyboardInterrupt would come only when the pass ends.
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time, traceback
            import numpy as np
            import fastrnn
            rng = np.random.default_rng(0)
            layer = fastrnn.LSTM(8, 1024, backend="cython", seed=0)
            x = rng.standard_normal((3000, 8, 8)).astype(np.float32)
            if "{direction}" == "backward":
                layer(x)
            print("started", flush=True)
            try:
                if "{direction}" == "forward":
                    layer(x)
                else:
                    layer.backward(np.ones((3000, 8, 1024), np.float32))
                print("not interrupted", flush=True)
            except KeyboardInterrupt as error:
                caught = time.monotonic()
                frames = [frame.filename for frame in traceback.extract_tb(error.__traceback__)]
                print("interrupted", caught, "_kernels" in frames[-1], flush=True)
            small = rng.standard_normal((3, 2, 8)).astype(np.float32)
            twin = fastrnn.LSTM(8, 1024, backend="reference", seed=0)
            np.testing.assert_allclose(layer(small)[0], twin(small)[0], rtol=1e-4, atol=1e-6)
            layer.backward(np.ones((3, 2, 1024), np.float32))
            print("usable", float(np.abs(layer(small)[0]).sum()), flush=True)
        """)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=os.path.dirname(os.path.dirname(fastrnn.__file__)))
    try:
        assert process.stdout.readline().strip() == "started"
        time.sleep(0.3)
        sent = time.monotonic()
        process.send_signal(2)  # SIGINT
        out, err = process.communicate(timeout=300)
    finally:
        process.kill()
    lines = out.split("\n")
    assert lines[0].startswith("interrupted"), (out, err)
    _, caught, in_kernel = lines[0].split()
    assert float(caught) - sent < 1.0  # generous: the pass checks every 20 ms
    assert in_kernel == "True"  # stopped inside the pass
    assert lines[1].startswith("usable"), (out, err)


# -- 6. fork during another thread's pass --------------------------------------------------------

def test_fork_during_a_pass_leaves_the_child_its_blas_threads():
    if not threads._blas_controllers():
        pytest.skip("threadpoolctl finds no BLAS whose thread setting a pass could change")
    result = run_script("""
        import os, threading, time
        import numpy as np
        import fastrnn
        from fastrnn._kernels import threads
        before = threads._blas_thread_count()
        layer = fastrnn.LSTM(8, 256, backend="cython", seed=0)
        x = np.ones((400, 16, 8), np.float32)
        done = False
        def passes():
            while not done:
                layer(x)
        worker = threading.Thread(target=passes)
        worker.start()
        deadline = time.monotonic() + 60
        while threads._blas_thread_count() != 1 and time.monotonic() < deadline:
            pass
        during = threads._blas_thread_count()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(write, str(threads._blas_thread_count()).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        child = os.read(read, 100).decode()
        done = True
        worker.join()
        print(before, during, child, threads._blas_thread_count())
    """, OPENBLAS_NUM_THREADS="2")
    assert result.returncode == 0, result.stderr
    before, during, child, after = result.stdout.split()
    assert (before, during, child, after) == ("2", "1", "2", "2")
