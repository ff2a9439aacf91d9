"""Unbatched input (T, D), as torch takes it: y (T, H * dirs), states (num_layers * dirs, H),
backward with gradients of those shapes; batch_first does not apply to it."""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastrnn
from test_layers import CELLS, TORCH_CELLS, as_tuple, make, torch_layer

BACKENDS = fastrnn.available_backends()


def unbatched_state(layer, rng):
    shape = (layer.num_layers * layer.num_directions, layer.hidden_size)
    return tuple(rng.standard_normal(shape) for _ in layer.state_names)


def single(parts):
    return parts if len(parts) > 1 else parts[0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_equals_a_batch_of_one(cell, backend, batch_first):
    rng = np.random.default_rng(3)
    steps = 6
    unbatched = make(cell, num_layers=2, bidirectional=True, batch_first=batch_first, dtype=np.float64,
                     backend=backend, seed=5)
    batched = make(cell, num_layers=2, bidirectional=True, dtype=np.float64, backend=backend, seed=5)
    x = rng.standard_normal((steps, 3))
    state = unbatched_state(unbatched, rng)
    dy = rng.standard_normal((steps, 8))
    dstate = unbatched_state(unbatched, rng)

    y, state_n = unbatched(x, single(state))
    dx, dstate0 = unbatched.backward(dy, single(dstate))
    y1, state_n1 = batched(x[:, None], single(tuple(s[:, None] for s in state)))
    dx1, dstate01 = batched.backward(dy[:, None], single(tuple(s[:, None] for s in dstate)))

    assert y.shape == (steps, 8) and dx.shape == (steps, 3)
    assert_array_equal(y, y1[:, 0])
    assert_array_equal(dx, dx1[:, 0])
    for ours, theirs in zip(as_tuple(state_n) + as_tuple(dstate0), as_tuple(state_n1) + as_tuple(dstate01)):
        assert ours.shape == (4, 4)
        assert_array_equal(ours, theirs[:, 0])
    for name in batched.grads:
        assert_array_equal(unbatched.grads[name], batched.grads[name], err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", TORCH_CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_unbatched_matches_torch(cell, backend, bidirectional):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    steps = 5
    layer = make(cell, input_size=3, hidden_size=6, num_layers=2, bidirectional=bidirectional,
                 dtype=np.float64, backend=backend, seed=9)
    x = rng.standard_normal((steps, 3))
    state = unbatched_state(layer, rng)
    dy = rng.standard_normal((steps, 6 * layer.num_directions))
    dstate = unbatched_state(layer, rng)

    y, state_n = layer(x, single(state))
    dx, dstate0 = layer.backward(dy, single(dstate))

    module = torch_layer(torch, cell, layer)
    x_t = torch.tensor(x, requires_grad=True)
    state_t = tuple(torch.tensor(s, requires_grad=True) for s in state)
    y_t, state_n_t = module(x_t, single(state_t))
    state_n_t = as_tuple(state_n_t)
    loss = (y_t * torch.from_numpy(dy)).sum() + sum(
        (s * torch.from_numpy(d)).sum() for s, d in zip(state_n_t, dstate))
    loss.backward()

    tol = {"rtol": 1e-9, "atol": 1e-12}
    assert y.shape == tuple(y_t.shape)
    assert_allclose(y, y_t.detach().numpy(), **tol)
    for ours, theirs in zip(as_tuple(state_n), state_n_t):
        assert ours.shape == tuple(theirs.shape)
        assert_allclose(ours, theirs.detach().numpy(), **tol)
    assert_allclose(dx, x_t.grad.numpy(), **tol)
    for ours, theirs in zip(as_tuple(dstate0), state_t):
        assert_allclose(ours, theirs.grad.numpy(), **tol)
    for name, param in module.named_parameters():
        assert_allclose(layer.grads[name], param.grad.numpy(), err_msg=name, **tol)


def test_unbatched_shape_errors_name_the_argument():
    rng = np.random.default_rng(0)
    layer = fastrnn.LSTM(3, 4, num_layers=2, backend="reference", seed=0)
    x = rng.standard_normal((5, 3))
    with pytest.raises(ValueError, match=r"x must have shape \(\*, 3\), got \(5, 2\)"):
        layer(rng.standard_normal((5, 2)))
    batched_state = rng.standard_normal((2, 1, 4))
    with pytest.raises(ValueError, match=r"state\[0\] \(h\) must have shape \(2, 4\), got \(2, 1, 4\)"):
        layer(x, (batched_state, batched_state))
    layer(x)
    with pytest.raises(ValueError, match=r"dy must have shape \(5, 4\), got \(5, 1, 4\)"):
        layer.backward(rng.standard_normal((5, 1, 4)))
    layer(x)
    with pytest.raises(ValueError, match=r"dstate\[1\] \(c\) must have shape \(2, 4\), got \(2, 3\)"):
        layer.backward(rng.standard_normal((5, 4)), (np.zeros((2, 4)), np.zeros((2, 3))))
    gru = fastrnn.GRU(3, 4, backend="reference", seed=0)
    with pytest.raises(ValueError, match=r"state must have shape \(1, 4\), got \(1, 1, 4\)"):
        gru(x, np.zeros((1, 1, 4)))
