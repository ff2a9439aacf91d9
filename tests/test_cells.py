"""Step-wise cells (fastrnn.LSTMCell, GRUCell, RNNCell): unrolled cells equal the layer, torch's
cells agree, the tape backpropagates in reverse order, and no_grad keeps nothing."""
import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastrnn

BACKENDS = fastrnn.available_backends()

# name -> (cell class, layer class, options)
CELL_CASES = {
    "lstm": (fastrnn.LSTMCell, fastrnn.LSTM, {}),
    "lstm_peephole": (fastrnn.LSTMCell, fastrnn.LSTM, {"peephole": True}),
    "lstm_no_forget_gate": (fastrnn.LSTMCell, fastrnn.LSTM, {"forget_gate": False}),
    "lstm_no_forget_gate_peephole": (fastrnn.LSTMCell, fastrnn.LSTM, {"forget_gate": False, "peephole": True}),
    "gru_reset_after": (fastrnn.GRUCell, fastrnn.GRU, {"reset_after": True}),
    "gru_reset_before": (fastrnn.GRUCell, fastrnn.GRU, {"reset_after": False}),
    "rnn_tanh": (fastrnn.RNNCell, fastrnn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (fastrnn.RNNCell, fastrnn.RNN, {"nonlinearity": "relu"}),
}
TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-13), np.float32: dict(rtol=1e-5, atol=1e-6)}


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def layer_like(cell, layer_cls, options, bias, dtype, backend):
    """A one-layer layer holding the cell's weights."""
    layer = layer_cls(cell.input_size, cell.hidden_size, bias=bias, dtype=dtype, backend=backend, **options)
    layer.load_state_dict({f"{name}_l0": value for name, value in cell.state_dict().items()})
    return layer


def unroll(cell, xs, state):
    """Run the cell over xs step by step; returns the output h of every step and the last state."""
    hs = []
    for x in xs:
        state = cell(x, state)
        hs.append(as_tuple(state)[0])
    return np.stack(hs), state


def backprop(cell, dys, dstate_n):
    """BPTT through the steps unroll recorded: dys[t] is the gradient w.r.t. step t's output h."""
    dstate = as_tuple(dstate_n)
    dxs = []
    for t in reversed(range(len(dys))):
        dstate = (dstate[0] + dys[t],) + dstate[1:]
        dx, dstate = cell.backward(dstate if len(dstate) > 1 else dstate[0])
        dstate = as_tuple(dstate)
        dxs.append(dx)
    return np.stack(dxs[::-1]), dstate


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", CELL_CASES)
def test_unrolled_cell_equals_the_layer(case, bias, dtype, backend):
    cell_cls, layer_cls, options = CELL_CASES[case]
    rng = np.random.default_rng(1)
    T, B, D, H = 6, 3, 4, 5
    cell = cell_cls(D, H, bias=bias, dtype=dtype, backend=backend, seed=2, **options)
    layer = layer_like(cell, layer_cls, options, bias, dtype, backend)
    xs = rng.standard_normal((T, B, D)).astype(dtype)
    state0 = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in cell.state_names)
    dys = rng.standard_normal((T, B, H)).astype(dtype)
    dstate_n = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in cell.state_names)

    hs, state_n = unroll(cell, xs, state0 if len(state0) > 1 else state0[0])
    dxs, dstate0 = backprop(cell, dys, dstate_n)
    y, layer_state_n = layer(xs, tuple(s[None] for s in state0) if len(state0) > 1 else state0[0][None])
    dx, layer_dstate0 = layer.backward(dys, tuple(d[None] for d in dstate_n) if len(dstate_n) > 1 else dstate_n[0][None])

    tol = TOLERANCE[dtype]
    assert_allclose(hs, y, **tol)
    for ours, theirs in zip(as_tuple(state_n), as_tuple(layer_state_n)):
        assert_allclose(ours, theirs[0], **tol)
    assert_allclose(dxs, dx, **tol)
    for ours, theirs in zip(dstate0, as_tuple(layer_dstate0)):
        assert_allclose(ours, theirs[0], **tol)
    for name, grad in cell.grads.items():
        assert_allclose(grad, layer.grads[f"{name}_l0"], err_msg=name, **tol)
    assert cell.tape_length == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["lstm_peephole", "lstm_no_forget_gate_peephole", "gru_reset_before", "rnn_tanh"])
def test_tape_gradients_match_finite_differences(case, backend):
    cell_cls, _, options = CELL_CASES[case]
    rng = np.random.default_rng(3)
    T, B, D, H = 3, 2, 3, 2
    cell = cell_cls(D, H, dtype=np.float64, backend=backend, seed=4, **options)
    xs = rng.standard_normal((T, B, D))
    weights = rng.standard_normal((T, B, H))

    def loss():
        cell.clear_tape()
        hs, _ = unroll(cell, xs, None)
        return float(np.sum(hs * weights))

    loss()
    cell.zero_grad()
    dxs, _ = backprop(cell, weights, tuple(np.zeros((B, H)) for _ in cell.state_names))
    analytic = {"xs": dxs, **{name: cell.grads[name] for name in cell.params}}
    fastrnn.gradcheck(loss, {"xs": xs, **cell.params}, analytic, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["lstm", "gru_reset_after", "rnn_tanh", "rnn_relu"])
def test_matches_torch_cells(case, backend):
    torch = pytest.importorskip("torch")
    cell_cls, _, options = CELL_CASES[case]
    rng = np.random.default_rng(5)
    T, B, D, H = 4, 3, 5, 6
    cell = cell_cls(D, H, dtype=np.float64, backend=backend, seed=6, **options)
    torch_cls = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}.get(cell.cell, torch.nn.RNNCell)
    torch_options = {"nonlinearity": options["nonlinearity"]} if cell.cell == "rnn" else {}
    module = torch_cls(D, H, **torch_options).double()
    module.load_state_dict({name: torch.from_numpy(value.copy()) for name, value in cell.params.items()})
    xs = rng.standard_normal((T, B, D))
    dys = rng.standard_normal((T, B, H))

    hs, _ = unroll(cell, xs, None)
    dxs, _ = backprop(cell, dys, tuple(np.zeros((B, H)) for _ in cell.state_names))

    xs_t = torch.tensor(xs, requires_grad=True)
    state, outputs = None, []
    for t in range(T):
        state = module(xs_t[t], state)
        outputs.append(state[0] if isinstance(state, tuple) else state)
    hs_t = torch.stack(outputs)
    (hs_t * torch.from_numpy(dys)).sum().backward()

    tol = dict(rtol=1e-10, atol=1e-12)
    assert_allclose(hs, hs_t.detach().numpy(), **tol)
    assert_allclose(dxs, xs_t.grad.numpy(), **tol)
    for name, param in module.named_parameters():
        assert_allclose(cell.grads[name], param.grad.numpy(), err_msg=name, **tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_input_gives_unbatched_state_and_gradients(backend):
    rng = np.random.default_rng(7)
    cell = fastrnn.LSTMCell(3, 4, dtype=np.float64, backend=backend, seed=8)
    x = rng.standard_normal(3)
    h, c = cell(x)
    assert h.shape == c.shape == (4,)
    batched_h, _ = cell(x[None])
    assert_allclose(h, batched_h[0], rtol=1e-14)
    cell.clear_tape()
    cell(x)
    dx, (dh0, dc0) = cell.backward((np.ones(4), None))
    assert dx.shape == (3,) and dh0.shape == dc0.shape == (4,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_grad_records_nothing_and_backward_then_raises(backend):
    cell = fastrnn.GRUCell(3, 4, backend=backend, seed=0)
    layer = fastrnn.GRU(3, 4, backend=backend, seed=0)
    x = np.ones((2, 3), np.float32)
    with fastrnn.no_grad():
        h = cell(x)
        layer(x[None])
    assert cell.tape_length == 0
    with pytest.raises(RuntimeError, match="recorded step"):
        cell.backward(np.ones_like(h))
    with pytest.raises(RuntimeError, match="preceding forward"):
        layer.backward(np.ones((1, 2, 4), np.float32))
    # outside the block, recording is back on
    cell(x)
    assert cell.tape_length == 1


def test_no_grad_gives_the_same_outputs_and_works_as_a_decorator():
    layer = fastrnn.LSTM(3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    expected, _ = layer(x)

    @fastrnn.no_grad()
    def infer(inputs):
        return layer(inputs)[0]

    assert_allclose(infer(x), expected, rtol=0, atol=0)
    assert fastrnn.is_grad_enabled()


def test_cell_rejects_bad_input_naming_the_argument():
    cell = fastrnn.LSTMCell(3, 4, seed=0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        cell(np.ones((2, 5), np.float32))
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        cell(np.ones((2, 3), np.int64))
    with pytest.raises(TypeError, match=r"state must be a tuple \(h, c\)"):
        cell(np.ones((2, 3), np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"state\[1\] \(c\) must have shape \(2, 4\)"):
        cell(np.ones((2, 3), np.float32), (np.zeros((2, 4)), np.zeros((3, 4))))
    cell(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"dstate\[0\] \(h\) must have shape \(2, 4\)"):
        cell.backward((np.ones((1, 4)), None))
    assert cell.tape_length == 1  # a rejected backward consumes nothing
    with pytest.raises(TypeError, match="bias must be True or False"):
        fastrnn.GRUCell(3, 4, bias="no")
    with pytest.raises(ValueError, match="nonlinearity"):
        fastrnn.RNNCell(3, 4, nonlinearity="sigmoid")


def test_no_grad_linear_and_embedding_keep_nothing():
    linear, embedding = fastrnn.Linear(3, 2, seed=0), fastrnn.Embedding(5, 3, seed=0)
    with fastrnn.no_grad():
        y = linear(np.ones((4, 3), np.float32))
        e = embedding(np.array([1, 4]))
    assert_allclose(y, linear(np.ones((4, 3), np.float32)), rtol=0, atol=0)
    assert_allclose(e, embedding.params["weight"][[1, 4]], rtol=0, atol=0)
    with fastrnn.no_grad():
        linear(np.ones((4, 3), np.float32))
        embedding(np.array([1, 4]))
    for module, dy in ((linear, np.ones((4, 2), np.float32)), (embedding, np.ones((2, 3), np.float32))):
        with pytest.raises(RuntimeError, match="preceding forward"):
            module.backward(dy)


def test_each_thread_unrolls_its_own_tape():
    import threading
    cell = fastrnn.RNNCell(3, 4, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 3))
    cell(x)
    recorded_elsewhere = []
    thread = threading.Thread(target=lambda: (cell(x), cell(x), recorded_elsewhere.append(cell.tape_length)))
    thread.start()
    thread.join()
    assert recorded_elsewhere == [2] and cell.tape_length == 1


def test_cell_sizes_are_fixed_after_construction():
    cell = fastrnn.LSTMCell(3, 4, seed=0)
    for name, value in (("hidden_size", 8), ("forget_gate", False), ("bias", False)):
        with pytest.raises(AttributeError, match="cannot be changed after construction"):
            setattr(cell, name, value)
