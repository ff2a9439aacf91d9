"""fastrnn.LSTM(proj_size=P), torch's projected LSTM (h_t = W_hr r_t): its options and shapes, the
reference's gradients against finite differences, the compiled kernels against the reference,
and the layer against torch.nn.LSTM(proj_size=P)."""
import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastrnn
from fastrnn import gradcheck
from fastrnn._cells import CELLS
from fastrnn.interop import from_torch, load_torch_state_dict

from cases import kernels, reference
from test_kernels import assert_parity, step_products  # noqa: F401 (a fixture)

# (cell, peephole): the LSTM cells, with and without forget gate and peepholes
LSTM_CASES = {f"{cell}{'_peephole' if peephole else ''}": (cell, peephole)
              for cell in ("lstm", "lstm_nf") for peephole in (False, True)}


def make_problem(case, rng, dtype, T, B, D, H, P, bias=True, scale=0.5):
    """Random inputs, parameters (w_hr (P, H) included), upstream gradients and nonzero grads."""
    cell, peephole = LSTM_CASES[case]
    shapes = CELLS[cell].param_shapes(D, H, bias, peephole, P)
    params = {name: rng.uniform(-scale, scale, shape).astype(dtype) for name, shape in shapes.items()}
    for name in ("b_ih", "b_hh", "w_peep"):
        params.setdefault(name, None)
    return {
        "cell": cell,
        "x": rng.standard_normal((T, B, D)).astype(dtype),
        "state0": (rng.standard_normal((B, P)).astype(dtype), rng.standard_normal((B, H)).astype(dtype)),
        "params": params,
        "dy": rng.standard_normal((T, B, P)).astype(dtype),
        "dstate_n": (rng.standard_normal((B, P)).astype(dtype), rng.standard_normal((B, H)).astype(dtype)),
        "grads": {k: None if p is None else rng.standard_normal(p.shape).astype(dtype) for k, p in params.items()},
    }


def run_cell(module, problem, lengths, reverse):
    """Forward then backward through a cell module: every result by name."""
    y, state_n, cache = module.forward(problem["x"], problem["state0"], problem["params"], lengths, reverse)
    grads = {k: None if g is None else g.copy() for k, g in problem["grads"].items()}
    dx, dstate0 = module.backward(problem["dy"], problem["dstate_n"], cache, grads)
    results = {"y": y, "dx": dx, "h_n": state_n[0], "c_n": state_n[1], "dh0": dstate0[0], "dc0": dstate0[1]}
    results.update({f"grads[{k}]": g for k, g in grads.items() if g is not None})
    return results


# -- the option ------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "error", "message"), [
    (True, TypeError, "proj_size must be an int, got bool"),
    (2.0, TypeError, "proj_size must be an int, got float"),
    (-1, ValueError, r"proj_size must be 0 .* hidden_size - 1 = 5, got -1"),
    (6, ValueError, r"proj_size must be 0 .* hidden_size - 1 = 5, got 6"),
    (7, ValueError, "got 7"),
])
def test_bad_proj_size_is_refused_naming_it(value, error, message):
    with pytest.raises(error, match=message):
        fastrnn.LSTM(3, 6, proj_size=value)


def test_only_lstm_cells_have_a_projection():
    with pytest.raises(TypeError, match="proj_size"):
        fastrnn.GRU(3, 6, proj_size=2)
    with pytest.raises(ValueError, match="proj_size=2: the gru cell has no projection"):
        CELLS["gru"].param_shapes(3, 6, proj_size=2)


@pytest.mark.parametrize("forget_gate", [True, False])
def test_parameters_have_torch_names_shapes_and_init(forget_gate):
    H, P, G = 50, 7, 4 if forget_gate else 3
    layer = fastrnn.LSTM(3, H, 2, bidirectional=True, proj_size=P, peephole=True, forget_gate=forget_gate,
                         dtype=np.float64, seed=0)
    for suffix in ("_l0", "_l0_reverse", "_l1", "_l1_reverse"):
        layer_input = 3 if suffix.startswith("_l0") else 2 * P  # stacked layers read h of both directions
        assert layer.params["weight_ih" + suffix].shape == (G * H, layer_input)
        assert layer.params["weight_hh" + suffix].shape == (G * H, P)
        assert layer.params["weight_hr" + suffix].shape == (P, H)
        assert layer.params["weight_peephole" + suffix].shape == (G - 1, H)
    weights = layer.params["weight_hr_l1"]
    # U(-1/sqrt(H), 1/sqrt(H)), as torch: inside the bound, and not a narrower range
    assert np.abs(weights).max() <= 1 / np.sqrt(H) and np.abs(weights).max() > 0.8 / np.sqrt(H)
    assert "proj_size=7" in repr(layer)
    with pytest.raises(AttributeError, match="proj_size cannot be changed"):
        layer.proj_size = 3
    assert "proj_size" not in repr(fastrnn.LSTM(3, H))


def test_states_have_p_columns_for_h_and_h_columns_for_c():
    layer = fastrnn.LSTM(3, 6, 2, bidirectional=True, proj_size=2, batch_first=True, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 5, 3)).astype(np.float32)
    y, (h, c) = layer(x)
    assert y.shape == (4, 5, 4) and h.shape == (4, 4, 2) and c.shape == (4, 4, 6)
    dx, (dh0, dc0) = layer.backward(np.ones_like(y))
    assert dx.shape == x.shape and dh0.shape == h.shape and dc0.shape == c.shape
    with pytest.raises(ValueError, match=r"state\[0\] \(h\).*\(4, 4, 2\).*\(4, 4, 6\)"):
        layer(x, (c, c))
    with pytest.raises(ValueError, match=r"state\[1\] \(c\).*\(4, 4, 6\).*\(4, 4, 2\)"):
        layer(x, (h, h))


# -- the reference against finite differences -----------------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, (4, 1, 3)])
@pytest.mark.parametrize("case", LSTM_CASES)
def test_reference_gradients_match_finite_differences(case, lengths, reverse):
    rng = np.random.default_rng(3)
    problem = make_problem(case, rng, np.float64, 4, 3, 2, 5, 2)
    module = reference(problem["cell"])
    lengths = None if lengths is None else np.array(lengths, np.int64)
    x, (h0, c0), params = problem["x"], problem["state0"], problem["params"]
    w_y, w_h, w_c = (rng.standard_normal(shape) for shape in ((4, 3, 2), (3, 2), (3, 5)))

    def loss():
        y, (h_n, c_n), _ = module.forward(x, (h0, c0), params, lengths, reverse)
        return np.sum(y * w_y) + np.sum(h_n * w_h) + np.sum(c_n * w_c)

    _, _, cache = module.forward(x, (h0, c0), params, lengths, reverse)
    grads = {k: None if p is None else np.zeros_like(p) for k, p in params.items()}
    dx, (dh0, dc0) = module.backward(w_y, (w_h, w_c), cache, grads)
    arrays = {"x": x, "h0": h0, "c0": c0, **{k: p for k, p in params.items() if p is not None}}
    analytic = {"x": dx, "h0": dh0, "c0": dc0, **{k: g for k, g in grads.items() if g is not None}}
    assert "w_hr" in arrays
    gradcheck(loss, arrays, analytic, eps=1e-6, rtol=1e-6, atol=1e-9)


# -- the compiled kernels against the reference ---------------------------------------------

# (T, B, D, H, P, lengths, reverse, bias), as test_kernels.SHAPES with a projection: P = 1,
# P = H - 1 and odd sizes; the last has T*B = 520 rows, where the whole-sequence products,
# W_hr's gradient among them, run in matmul_packed.
SHAPES = {
    "H7_P3": (5, 3, 4, 7, 3, None, False, True),
    "H7_P6_lengths_reverse": (5, 3, 4, 7, 6, (3, 1, 5), True, True),
    "H7_P1_lengths_no_bias": (5, 4, 3, 7, 1, (2, 5, 1, 4), False, False),
    "B1_H33_P16": (6, 1, 2, 33, 16, None, False, True),
    "H33_P17_lengths_reverse": (4, 2, 6, 33, 17, (4, 1), True, True),
    "TB520_D19_H11_P5": (65, 8, 19, 11, 5, None, False, True),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("case", LSTM_CASES)
def test_kernels_match_reference(case, shape, dtype, step_products):
    T, B, D, H, P, lengths, reverse, bias = SHAPES[shape]
    problem = make_problem(case, np.random.default_rng(7), dtype, T, B, D, H, P, bias)
    lengths = None if lengths is None else np.array(lengths, np.int64)
    cell = problem["cell"]
    assert_parity(run_cell(kernels(cell), problem, lengths, reverse),
                  run_cell(reference(cell), problem, lengths, reverse), dtype)


# Passes large enough to be split among threads (see test_kernels.THREADED); the first has
# T*B >= 512 rows, so the threads split the sums of the weight gradients, W_hr's included.
THREADED = [(26, 32, 64, 128, 48), (5, 32, 128, 128, 64)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", THREADED)
@pytest.mark.parametrize("case", ["lstm", "lstm_nf_peephole"])
def test_kernels_match_reference_when_split_among_threads(case, shape, dtype, step_products):
    T, B, D, H, P = shape
    rng = np.random.default_rng(11)
    problem = make_problem(case, rng, dtype, T, B, D, H, P, scale=1 / np.sqrt(H))
    lengths = rng.integers(1, T + 1, B)
    cell = problem["cell"]
    assert_parity(run_cell(kernels(cell), problem, lengths, True),
                  run_cell(reference(cell), problem, lengths, True), dtype)


# -- the layer against torch -----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["reference", "cython"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=3, batch_first=True, bias=False),
], ids=["single", "stacked_bidirectional", "three_layers_batch_first_no_bias"])
def test_layer_matches_torch_outputs_states_and_gradients(options, dtype, backend):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    D, H, P, T, B = 5, 9, 4, 6, 3
    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    module = torch.nn.LSTM(D, H, proj_size=P, **options).to(torch_dtype)
    layer = from_torch(module, backend=backend)
    assert layer.proj_size == P and layer.dtype == dtype

    rng = np.random.default_rng(1)
    units = layer.num_layers * layer.num_directions
    x = rng.standard_normal((B, T, D) if layer.batch_first else (T, B, D)).astype(dtype)
    h0, c0 = rng.standard_normal((units, B, P)).astype(dtype), rng.standard_normal((units, B, H)).astype(dtype)
    y, (h_n, c_n) = layer(x, (h0, c0))
    dy = rng.standard_normal(y.shape).astype(dtype)
    dh_n, dc_n = rng.standard_normal(h_n.shape).astype(dtype), rng.standard_normal(c_n.shape).astype(dtype)
    layer.zero_grad()
    dx, (dh0, dc0) = layer.backward(dy, (dh_n, dc_n))

    x_t, h0_t, c0_t = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    y_t, (h_n_t, c_n_t) = module(x_t, (h0_t, c0_t))
    ((y_t * torch.from_numpy(dy)).sum() + (h_n_t * torch.from_numpy(dh_n)).sum()
     + (c_n_t * torch.from_numpy(dc_n)).sum()).backward()

    tol = 1e-12 if dtype == np.float64 else 1e-5
    pairs = {"y": (y, y_t), "h_n": (h_n, h_n_t), "c_n": (c_n, c_n_t), "dx": (dx, x_t.grad), "dh0": (dh0, h0_t.grad),
             "dc0": (dc0, c0_t.grad)}
    pairs.update({name: (layer.grads[name], parameter.grad) for name, parameter in module.named_parameters()})
    assert any(name.startswith("weight_hr") for name in pairs)
    for name, (ours, theirs) in pairs.items():
        theirs = theirs.detach().numpy()
        assert_allclose(ours, theirs, rtol=tol, atol=tol * np.abs(theirs).max(), err_msg=name)


def test_torch_state_dict_loads_into_a_layer_with_projection():
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    module = torch.nn.LSTM(3, 6, 2, proj_size=2, bidirectional=True)
    layer = fastrnn.LSTM(3, 6, 2, proj_size=2, bidirectional=True, seed=5)
    load_torch_state_dict(layer, module.state_dict())
    for name, value in module.state_dict().items():
        assert_allclose(layer.params[name], value.numpy(), rtol=0, atol=0)


def test_state_dict_without_projection_into_a_layer_with_one_is_refused():
    torch = pytest.importorskip("torch")
    layer = fastrnn.LSTM(3, 6, proj_size=2, seed=0)
    before = layer.state_dict()
    with pytest.raises(ValueError, match="proj_size=2 but state_dict has no 'weight_hr_l0'"):
        load_torch_state_dict(layer, torch.nn.LSTM(3, 6).state_dict())
    for name, value in layer.params.items():
        assert_allclose(value, before[name], rtol=0, atol=0)


def test_onnx_and_keras_conversions_refuse_a_projection():
    from fastrnn.interop import keras as keras_interop

    layer = fastrnn.LSTM(3, 6, proj_size=2, seed=0)
    with pytest.raises(ValueError, match="proj_size=2: ONNX's and Keras's LSTM have no projection"):
        keras_interop.to_keras_weights(layer)
    pytest.importorskip("onnx")
    from fastrnn.interop import onnx as onnx_interop

    with pytest.raises(ValueError, match="proj_size=2"):
        onnx_interop.to_onnx(layer)


def test_onnx_and_keras_conversions_refuse_an_lstm_without_forget_gate():
    from fastrnn.interop import keras as keras_interop

    layer = fastrnn.LSTM(3, 6, forget_gate=False, seed=0)
    with pytest.raises(ValueError, match="forget_gate=False: ONNX's and Keras's LSTM always have a forget gate"):
        keras_interop.to_keras_weights(layer)
    pytest.importorskip("onnx")
    from fastrnn.interop import onnx as onnx_interop

    with pytest.raises(ValueError, match="forget_gate=False"):
        onnx_interop.to_onnx(layer)
