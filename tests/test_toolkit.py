"""The training toolkit (docs/toolkit.md): Linear, Embedding, losses, optimizers, clipping, gradcheck."""
import io
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from fastrnn import losses, optim
from fastrnn.clip import clip_grad_norm
from fastrnn import gradcheck, numerical_gradient
from fastrnn.modules import Embedding, Linear

# Tolerances for comparing the same computation done two ways, per dtype.
RTOL = {np.float32: 1e-5, np.float64: 1e-10}
ATOL = {np.float32: 1e-6, np.float64: 1e-12}


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def rng(seed=0):
    return np.random.default_rng(seed)


def assert_loss_matches_torch(torch, ours, torch_loss, pred, target):
    """`ours` == (loss, dpred) matches torch_loss(pred, target) and its gradient, in pred's dtype."""
    loss, dpred = ours
    dtype = pred.dtype.type
    pred_t = torch.tensor(pred, requires_grad=True)
    loss_t = torch_loss(pred_t, torch.tensor(target))
    loss_t.backward()
    assert dpred.dtype == dtype
    assert_allclose(loss, loss_t.item(), rtol=RTOL[dtype], atol=ATOL[dtype])
    assert_allclose(dpred, pred_t.grad.numpy(), rtol=RTOL[dtype], atol=ATOL[dtype])


# -- gradcheck itself -------------------------------------------------------------------------


def test_gradcheck_passes_on_correct_gradient():
    a = rng().standard_normal((3, 4))
    worst = gradcheck(lambda: float(np.sum(a**3)), {"a": a}, {"a": 3 * a**2})
    assert worst < 1e-7


def test_gradcheck_raises_naming_array_on_wrong_gradient():
    a = rng().standard_normal((3, 4))
    wrong = 3 * a**2
    wrong[1, 2] += 1e-3
    with pytest.raises(AssertionError, match=r"'a'.*\(1, 2\)"):
        gradcheck(lambda: float(np.sum(a**3)), {"a": a}, {"a": wrong})


def test_numerical_gradient_restores_array():
    a = rng().standard_normal((2, 5))
    saved = a.copy()
    numerical_gradient(lambda: float(np.sum(np.sin(a))), a)
    assert_allclose(a, saved, rtol=0, atol=0)


# -- Linear ------------------------------------------------------------------------------------


def test_linear_gradients_match_finite_differences_for_3d_input():
    generator = rng(1)
    layer = Linear(4, 3, dtype=np.float64, seed=generator)
    x = generator.standard_normal((2, 5, 4))
    weight_of_y = generator.standard_normal((2, 5, 3))

    def loss():
        return float(np.sum(layer.forward(x) * weight_of_y))

    loss()
    dx = layer.backward(weight_of_y)
    gradcheck(
        loss,
        {"x": x, "weight": layer.params["weight"], "bias": layer.params["bias"]},
        {"x": dx, "weight": layer.grads["weight"], "bias": layer.grads["bias"]},
        rtol=1e-6,
        atol=1e-9,
    )


def test_linear_matches_torch_forward_and_backward(torch):
    generator = rng(2)
    layer = Linear(6, 5, dtype=np.float64, seed=3)
    x = generator.standard_normal((4, 2, 6))
    dy = generator.standard_normal((4, 2, 5))
    y = layer(x)
    dx = layer.backward(dy)

    x_t = torch.tensor(x, requires_grad=True)
    w_t = torch.tensor(layer.params["weight"], requires_grad=True)
    b_t = torch.tensor(layer.params["bias"], requires_grad=True)
    y_t = torch.nn.functional.linear(x_t, w_t, b_t)
    y_t.backward(torch.tensor(dy))
    assert_allclose(y, y_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert_allclose(dx, x_t.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert_allclose(layer.grads["weight"], w_t.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert_allclose(layer.grads["bias"], b_t.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_linear_accepts_1d_input():
    layer = Linear(3, 2, dtype=np.float64, seed=0)
    x = rng().standard_normal(3)
    y = layer(x)
    assert y.shape == (2,)
    assert_allclose(y, layer.params["weight"] @ x + layer.params["bias"], rtol=1e-12, atol=1e-12)
    assert layer.backward(np.ones(2)).shape == (3,)


def test_linear_without_bias_has_no_bias_parameter():
    layer = Linear(3, 2, bias=False, dtype=np.float64, seed=0)
    x = rng().standard_normal((4, 3))
    assert set(layer.params) == set(layer.grads) == {"weight"}
    assert_allclose(layer(x), x @ layer.params["weight"].T, rtol=1e-12, atol=1e-12)


def test_linear_backward_adds_into_grads():
    layer = Linear(3, 2, dtype=np.float64, seed=0)
    x = rng(1).standard_normal((4, 3))
    dy = rng(2).standard_normal((4, 2))
    layer(x)
    layer.backward(dy)
    once = {name: grad.copy() for name, grad in layer.grads.items()}
    layer.backward(dy)
    for name, grad in layer.grads.items():
        assert_allclose(grad, 2 * once[name], rtol=1e-12, atol=0)


def test_zero_grad_zeroes_the_same_arrays():
    layer = Linear(3, 2, dtype=np.float64, seed=0)
    weight_grad = layer.grads["weight"]
    layer(rng().standard_normal((4, 3)))
    layer.backward(rng(1).standard_normal((4, 2)))
    layer.zero_grad()
    assert layer.grads["weight"] is weight_grad
    assert not weight_grad.any()


def test_linear_init_is_uniform_within_torch_bound():
    in_features = 16
    weight = Linear(in_features, 500, seed=0).params["weight"]
    bound = 1 / math.sqrt(in_features)
    assert np.abs(weight).max() <= bound
    # 8000 uniform draws reach within 1% of both ends of the interval.
    assert weight.max() > 0.99 * bound and weight.min() < -0.99 * bound


def test_embedding_init_is_standard_normal():
    weight = Embedding(1000, 50, dtype=np.float64, seed=0).params["weight"]
    # 50000 draws: the sample mean and std are within 0.02 of N(0, 1)'s.
    assert abs(weight.mean()) < 0.02
    assert abs(weight.std() - 1) < 0.02


@pytest.mark.parametrize(
    "make",
    [lambda seed: Linear(5, 4, seed=seed), lambda seed: Embedding(7, 3, seed=seed)],
    ids=["linear", "embedding"],
)
def test_same_seed_gives_same_weights(make):
    first, second, other = make(11), make(11), make(12)
    for name in first.params:
        assert_allclose(first.params[name], second.params[name], rtol=0, atol=0)
        assert not np.array_equal(first.params[name], other.params[name])


def test_seed_accepts_generator():
    first = Linear(5, 4, seed=np.random.default_rng(3))
    second = Linear(5, 4, seed=np.random.default_rng(3))
    assert_allclose(first.params["weight"], second.params["weight"], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_keeps_dtype(dtype):
    layer = Linear(3, 2, dtype=dtype, seed=0)
    # Input of the other float dtype is converted to the layer's.
    x = rng().standard_normal((4, 3)).astype(np.float64 if dtype == np.float32 else np.float32)
    y = layer(x)
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == dtype
    assert all(array.dtype == dtype for array in [*layer.params.values(), *layer.grads.values()])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embedding_keeps_dtype(dtype):
    layer = Embedding(5, 3, dtype=dtype, seed=0)
    out = layer(np.array([1, 4]))
    layer.backward(np.ones((2, 3), dtype=np.float64))
    assert out.dtype == layer.params["weight"].dtype == layer.grads["weight"].dtype == dtype


@pytest.mark.parametrize("make", [Linear, Embedding])
@pytest.mark.parametrize(
    "dtype",
    [
        np.int32,
        np.float16,
        "not-a-dtype",
        None,
    ],
)
def test_bad_dtype_is_type_error(make, dtype):
    with pytest.raises(TypeError, match="dtype"):
        make(3, 2, dtype=dtype)


def test_linear_rejects_x_of_wrong_last_dimension():
    layer = Linear(3, 2, seed=0)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\), got \(4, 5\)"):
        layer(np.zeros((4, 5)))


def test_linear_rejects_integer_x():
    with pytest.raises(TypeError, match=r"x .*int64"):
        Linear(3, 2, seed=0)(np.arange(3))


def test_linear_rejects_dy_of_wrong_shape():
    layer = Linear(3, 2, seed=0)
    layer(rng().standard_normal((4, 3)))
    with pytest.raises(ValueError, match=r"dy must have shape \(4, 2\).*got \(4, 3\)"):
        layer.backward(np.zeros((4, 3)))


@pytest.mark.parametrize("layer", [Linear(3, 2, seed=0), Embedding(4, 2, seed=0)])
def test_backward_without_forward_is_runtime_error(layer):
    with pytest.raises(RuntimeError, match="backward needs a preceding forward call"):
        layer.backward(np.zeros((1, 2)))


def test_linear_does_not_modify_input_and_returns_fresh_arrays():
    layer = Linear(3, 2, dtype=np.float64, seed=0)
    x = rng().standard_normal((4, 3))
    x_saved = x.copy()
    y = layer(x)
    dx = layer.backward(np.ones((4, 2)))
    y_saved, dx_saved = y.copy(), dx.copy()
    layer(rng(1).standard_normal((4, 3)))
    layer.backward(np.full((4, 2), 2.0))
    assert_allclose(x, x_saved, rtol=0, atol=0)
    assert_allclose(y, y_saved, rtol=0, atol=0)
    assert_allclose(dx, dx_saved, rtol=0, atol=0)


def test_linear_backward_uses_input_as_it_was_at_forward():
    layer = Linear(3, 2, dtype=np.float64, seed=0)
    x = rng().standard_normal((4, 3))
    dy = rng(1).standard_normal((4, 2))
    expected_weight_grad = dy.T @ x
    layer(x)
    x += 1.0
    layer.backward(dy)
    assert_allclose(layer.grads["weight"], expected_weight_grad, rtol=1e-12, atol=1e-12)


def test_state_dict_returns_copies():
    layer = Linear(3, 2, seed=0)
    state = layer.state_dict()
    state["weight"] += 1
    assert not np.array_equal(state["weight"], layer.params["weight"])


def test_load_state_dict_copies_into_the_same_arrays():
    layer = Linear(3, 2, dtype=np.float64, seed=0)
    weight = layer.params["weight"]
    source = Linear(3, 2, dtype=np.float64, seed=1).state_dict()
    layer.load_state_dict(source)
    assert layer.params["weight"] is weight
    assert_allclose(weight, source["weight"], rtol=0, atol=0)
    source["weight"] += 1
    assert not np.array_equal(weight, source["weight"])


def test_load_state_dict_names_missing_key():
    layer = Linear(3, 2, seed=0)
    with pytest.raises(KeyError, match="bias"):
        layer.load_state_dict({"weight": np.zeros((2, 3))})


def test_load_state_dict_names_entry_of_wrong_shape():
    layer = Linear(3, 2, seed=0)
    with pytest.raises(ValueError, match=r"'bias'.*\(2,?\).*\(3,\)"):
        layer.load_state_dict({"weight": np.zeros((2, 3)), "bias": np.zeros(3)})


def test_load_state_dict_changes_nothing_when_an_entry_is_wrong():
    layer = Linear(3, 2, seed=0)
    saved = layer.state_dict()
    with pytest.raises(ValueError):
        layer.load_state_dict({"weight": np.ones((2, 3)), "bias": np.zeros(3)})
    assert_allclose(layer.params["weight"], saved["weight"], rtol=0, atol=0)


# -- Embedding ---------------------------------------------------------------------------------


def test_embedding_forward_looks_up_rows_for_any_leading_shape():
    layer = Embedding(6, 3, dtype=np.float64, seed=0)
    indices = np.array([[5, 0, 2], [2, 2, 1]])
    out = layer(indices)
    assert out.shape == (2, 3, 3)
    assert_allclose(out[1, 0], layer.params["weight"][2], rtol=0, atol=0)
    assert_allclose(out, layer.params["weight"][indices], rtol=0, atol=0)


def test_embedding_weight_gradient_matches_finite_differences_with_repeated_indices():
    generator = rng(4)
    layer = Embedding(5, 3, dtype=np.float64, seed=generator)
    indices = np.array([[1, 3, 1], [1, 0, 3]])
    weight_of_out = generator.standard_normal((2, 3, 3))

    def loss():
        return float(np.sum(layer.forward(indices) * weight_of_out))

    loss()
    assert layer.backward(weight_of_out) is None
    weight, weight_grad = layer.params["weight"], layer.grads["weight"]
    gradcheck(loss, {"weight": weight}, {"weight": weight_grad}, rtol=1e-6, atol=1e-9)
    # Row 2 and row 4 were never looked up.
    assert not layer.grads["weight"][[2, 4]].any()


def test_embedding_output_is_a_fresh_array_even_for_a_scalar_index():
    layer = Embedding(4, 2, dtype=np.float64, seed=0)
    row = layer(np.int64(3))
    row += 1
    assert not np.array_equal(row, layer.params["weight"][3])


@pytest.mark.parametrize("bad", [7, -1])
def test_embedding_rejects_out_of_range_index_naming_it(bad):
    layer = Embedding(7, 2, seed=0)
    with pytest.raises(ValueError, match=rf"indices must be in \[0, 7\).*got {bad}"):
        layer(np.array([0, bad, 3]))


def test_embedding_rejects_float_indices():
    with pytest.raises(TypeError, match=r"indices .*float64"):
        Embedding(7, 2, seed=0)(np.array([0.0, 1.0]))


def test_embedding_rejects_dy_of_wrong_shape():
    layer = Embedding(7, 2, seed=0)
    layer(np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match=r"dy must have shape \(1, 3, 2\).*got \(3, 2\)"):
        layer.backward(np.zeros((3, 2)))


def test_embedding_does_not_keep_a_reference_to_indices():
    layer = Embedding(7, 2, dtype=np.float64, seed=0)
    indices = np.array([0, 1])
    dy = rng().standard_normal((2, 2))
    layer(indices)
    indices[:] = 5
    layer.backward(dy)
    assert_allclose(layer.grads["weight"][[0, 1]], dy, rtol=0, atol=0)


# -- losses ------------------------------------------------------------------------------------


def test_cross_entropy_gradient_matches_finite_differences_with_ignore_index():
    generator = rng(5)
    logits = generator.standard_normal((6, 4))
    targets = np.array([0, 3, -100, 1, 3, -100])
    _, dlogits = losses.softmax_cross_entropy(logits, targets, ignore_index=-100)
    gradcheck(
        lambda: losses.softmax_cross_entropy(logits, targets, ignore_index=-100)[0],
        {"logits": logits},
        {"logits": dlogits},
        rtol=1e-6,
        atol=1e-9,
    )
    assert not dlogits[[2, 5]].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ignore_index", [None, 2])
def test_cross_entropy_matches_torch(torch, dtype, ignore_index):
    generator = rng(6)
    logits = (3 * generator.standard_normal((8, 5))).astype(dtype)
    targets = generator.integers(0, 5, size=8)
    kwargs = {} if ignore_index is None else {"ignore_index": ignore_index}
    assert_loss_matches_torch(
        torch, losses.softmax_cross_entropy(logits, targets, ignore_index=ignore_index),
        lambda pred, target: torch.nn.functional.cross_entropy(pred, target, **kwargs), logits, targets)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_keeps_dtype(dtype):
    logits = rng().standard_normal((3, 4)).astype(dtype)
    loss, dlogits = losses.softmax_cross_entropy(logits, np.array([0, 1, 2]))
    assert dlogits.dtype == dtype
    assert isinstance(loss, float)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_exact_for_huge_logits(dtype):
    # Row 0: -log softmax = 1e4 + log(1 + e^-1e4) = 1e4; row 1: two equal logits, log 2.
    logits = np.array([[1e4, 0.0], [1e4, 1e4]], dtype=dtype)
    loss, dlogits = losses.softmax_cross_entropy(logits, np.array([1, 0]))
    assert_allclose(loss, (1e4 + math.log(2)) / 2, rtol=RTOL[dtype], atol=0)
    expected = np.array([[1.0, -1.0], [-0.5, 0.5]]) / 2
    assert_allclose(dlogits, expected, rtol=RTOL[dtype], atol=ATOL[dtype])


def test_cross_entropy_with_every_target_ignored_is_zero():
    logits = rng().standard_normal((3, 4))
    loss, dlogits = losses.softmax_cross_entropy(logits, np.array([-1, -1, -1]), ignore_index=-1)
    assert loss == 0.0
    assert dlogits.shape == (3, 4) and not dlogits.any()


def test_cross_entropy_does_not_modify_inputs():
    logits = rng().standard_normal((3, 4))
    targets = np.array([0, 3, 1])
    saved_logits, saved_targets = logits.copy(), targets.copy()
    losses.softmax_cross_entropy(logits, targets)
    assert_allclose(logits, saved_logits, rtol=0, atol=0)
    assert_allclose(targets, saved_targets, rtol=0, atol=0)


def test_cross_entropy_rejects_logits_that_are_not_2d():
    with pytest.raises(ValueError, match=r"logits must have shape \(N, C\).*\(4,\)"):
        losses.softmax_cross_entropy(np.zeros(4), np.array([0]))


def test_cross_entropy_rejects_integer_logits():
    with pytest.raises(TypeError, match="logits"):
        losses.softmax_cross_entropy(np.zeros((2, 3), dtype=np.int64), np.array([0, 1]))


def test_cross_entropy_rejects_float_targets():
    with pytest.raises(TypeError, match=r"targets .*float64"):
        losses.softmax_cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))


def test_cross_entropy_rejects_targets_of_wrong_length():
    with pytest.raises(ValueError, match=r"targets must have shape \(2,\).*got \(3,\)"):
        losses.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1, 2]))


def test_cross_entropy_rejects_target_out_of_range_naming_it():
    with pytest.raises(ValueError, match=r"targets must be in \[0, 3\).*got 5"):
        losses.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 5]))


def test_mse_gradient_matches_finite_differences():
    generator = rng(7)
    pred = generator.standard_normal((3, 2, 4))
    target = generator.standard_normal((3, 2, 4))
    _, dpred = losses.mse(pred, target)
    gradcheck(lambda: losses.mse(pred, target)[0], {"pred": pred}, {"pred": dpred}, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mse_matches_torch_and_keeps_dtype(torch, dtype):
    generator = rng(8)
    pred = generator.standard_normal((5, 3)).astype(dtype)
    target = generator.standard_normal((5, 3)).astype(dtype)
    assert_loss_matches_torch(torch, losses.mse(pred, target), torch.nn.functional.mse_loss, pred, target)


def test_mse_rejects_target_of_other_shape():
    with pytest.raises(ValueError, match=r"target must have the shape of pred \(2, 3\), got \(3, 2\)"):
        losses.mse(np.zeros((2, 3)), np.zeros((3, 2)))


def test_mse_rejects_integer_pred():
    with pytest.raises(TypeError, match="pred"):
        losses.mse(np.zeros(3, dtype=np.int64), np.zeros(3))


# -- optimizers --------------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": (lambda: optim.SGD(lr=0.1), lambda p, t: t.optim.SGD(p, lr=0.1)),
    "sgd_momentum": (
        lambda: optim.SGD(lr=0.1, momentum=0.9),
        lambda p, t: t.optim.SGD(p, lr=0.1, momentum=0.9),
    ),
    "sgd_momentum_weight_decay": (
        lambda: optim.SGD(lr=0.05, momentum=0.5, weight_decay=0.01),
        lambda p, t: t.optim.SGD(p, lr=0.05, momentum=0.5, weight_decay=0.01),
    ),
    "adagrad": (lambda: optim.Adagrad(lr=0.1), lambda p, t: t.optim.Adagrad(p, lr=0.1)),
    "adagrad_weight_decay": (
        lambda: optim.Adagrad(lr=0.1, eps=1e-6, weight_decay=0.1),
        lambda p, t: t.optim.Adagrad(p, lr=0.1, eps=1e-6, weight_decay=0.1),
    ),
    "adam": (lambda: optim.Adam(lr=0.01), lambda p, t: t.optim.Adam(p, lr=0.01)),
    "adam_options": (
        lambda: optim.Adam(lr=0.003, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
        lambda p, t: t.optim.Adam(p, lr=0.003, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
    ),
}


def run_against_torch(torch, name, dtype, steps=6):
    """Apply `steps` updates with changing gradients in fastrnn and torch; return both params."""
    make_ours, make_torch = OPTIMIZERS[name]
    generator = rng(9)
    params = {
        "rnn.weight_hh_l0": generator.standard_normal((4, 3)).astype(dtype),
        "head.bias": generator.standard_normal(5).astype(dtype),
    }
    torch_params = {key: torch.tensor(value.copy()) for key, value in params.items()}
    ours, theirs = make_ours(), make_torch(list(torch_params.values()), torch)
    for _ in range(steps):
        grads = {key: generator.standard_normal(value.shape).astype(dtype) for key, value in params.items()}
        ours.step(params, grads)
        for key, tensor in torch_params.items():
            tensor.grad = torch.tensor(grads[key])
        theirs.step()
    return params, {key: tensor.numpy() for key, tensor in torch_params.items()}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_matches_torch_over_several_steps(torch, name):
    ours, theirs = run_against_torch(torch, name, np.float64)
    for key in ours:
        assert_allclose(ours[key], theirs[key], rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("name", ["sgd_momentum", "adagrad", "adam"])
def test_optimizer_keeps_float32_and_matches_torch(torch, name):
    ours, theirs = run_against_torch(torch, name, np.float32)
    for key in ours:
        assert ours[key].dtype == np.float32
        assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_updates_arrays_in_place(name):
    params = {"weight": rng().standard_normal((3, 2))}
    weight, before = params["weight"], params["weight"].copy()
    OPTIMIZERS[name][0]().step(params, {"weight": rng(1).standard_normal((3, 2))})
    assert params["weight"] is weight
    assert not np.array_equal(weight, before)


def test_optimizer_updates_module_parameters_through_merged_dicts():
    embedding, head = Embedding(5, 3, dtype=np.float64, seed=0), Linear(3, 2, dtype=np.float64, seed=1)
    params = optim.merge(embed=embedding.params, head=head.params)
    grads = optim.merge(embed=embedding.grads, head=head.grads)
    assert sorted(params) == ["embed.weight", "head.bias", "head.weight"]
    before = head.params["weight"].copy()
    head(embedding(np.array([1, 2])))
    head.backward(np.ones((2, 2)))
    optim.SGD(lr=0.5).step(params, grads)
    assert_allclose(head.params["weight"], before - 0.5 * head.grads["weight"], rtol=1e-12, atol=1e-12)


def test_merge_rejects_colliding_keys():
    with pytest.raises(ValueError, match="'a.b.c'"):
        optim.merge(**{"a": {"b.c": np.zeros(1)}, "a.b": {"c": np.zeros(1)}})


def test_optimizer_names_missing_gradient():
    with pytest.raises(KeyError, match="'bias'"):
        optim.Adam(lr=0.1).step({"weight": np.zeros(2), "bias": np.zeros(2)}, {"weight": np.zeros(2)})


def test_optimizer_names_gradient_of_wrong_shape():
    with pytest.raises(ValueError, match=r"grads\['weight'\] must have shape \(2, 3\).*got \(3, 2\)"):
        optim.SGD(lr=0.1).step({"weight": np.zeros((2, 3))}, {"weight": np.zeros((3, 2))})


def test_optimizer_rejects_parameter_whose_shape_changed():
    optimizer = optim.Adam(lr=0.1)
    optimizer.step({"weight": np.ones(3)}, {"weight": np.ones(3)})
    with pytest.raises(ValueError, match=r"params\['weight'\] has shape \(4,\).*state.*\(3,\)"):
        optimizer.step({"weight": np.ones(4)}, {"weight": np.ones(4)})


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: optim.SGD(lr=-0.1), "lr"),
        (lambda: optim.SGD(lr=0.1, momentum=-1), "momentum"),
        (lambda: optim.Adagrad(lr=0.1, eps=-1), "eps"),
        (lambda: optim.Adam(lr=0.1, betas=(0.9, 1.0)), r"betas\[1\]"),
        (lambda: optim.Adam(lr=0.1, weight_decay=-0.1), "weight_decay"),
    ],
)
def test_optimizer_rejects_bad_hyperparameter_naming_it(make, name):
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize("name", ["sgd_momentum", "adagrad", "adam"])
def test_optimizer_state_survives_npz_round_trip(name):
    make = OPTIMIZERS[name][0]
    generator = rng(10)
    params = {"lstm.weight_ih_l0": generator.standard_normal((4, 3))}
    grads = [{"lstm.weight_ih_l0": generator.standard_normal((4, 3))} for _ in range(6)]
    optimizer = make()
    for step_grads in grads[:3]:
        optimizer.step(params, step_grads)
    buffer = io.BytesIO()
    np.savez(buffer, **optimizer.state_dict())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as saved:
        restored = make()
        restored.load_state_dict(dict(saved))
    restored_params = {key: value.copy() for key, value in params.items()}
    for step_grads in grads[3:]:
        optimizer.step(params, step_grads)
        restored.step(restored_params, step_grads)
    assert_allclose(restored_params["lstm.weight_ih_l0"], params["lstm.weight_ih_l0"], rtol=0, atol=0)


def test_optimizer_load_state_dict_names_unknown_buffer():
    with pytest.raises(KeyError, match="'weight/momentum_buffer'"):
        optim.Adam(lr=0.1).load_state_dict({"weight/momentum_buffer": np.zeros(3)})


def test_optimizer_load_state_dict_names_missing_buffer():
    with pytest.raises(KeyError, match="'weight/exp_avg_sq'"):
        optim.Adam(lr=0.1).load_state_dict({"weight/exp_avg": np.zeros(3), "weight/step": np.array(2)})


# -- clipping ----------------------------------------------------------------------------------


def clip_grads(dtype, scale):
    generator = rng(11)
    return {
        "weight": (scale * generator.standard_normal((4, 3))).astype(dtype),
        "bias": (scale * generator.standard_normal(4)).astype(dtype),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [10.0, 0.01])
def test_clip_grad_norm_matches_torch(torch, dtype, scale):
    grads = clip_grads(dtype, scale)
    tensors = []
    for value in grads.values():
        tensor = torch.zeros(value.shape, dtype=torch.float64 if dtype == np.float64 else torch.float32)
        tensor.grad = torch.tensor(value.copy())
        tensors.append(tensor)
    norm = clip_grad_norm(grads, max_norm=1.0)
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm=1.0)
    assert_allclose(norm, torch_norm.item(), rtol=RTOL[dtype], atol=0)
    for value, tensor in zip(grads.values(), tensors):
        assert_allclose(value, tensor.grad.numpy(), rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("dtype, norm_rtol", [(np.float32, 1e-6), (np.float64, 1e-12)])
def test_clip_grad_norm_scales_in_place_to_max_norm_and_returns_norm_before(dtype, norm_rtol):
    # Each array's sum of squares is accumulated in its dtype (as torch does), hence norm_rtol.
    grads = clip_grads(dtype, 10.0)
    weight = grads["weight"]
    expected_norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    norm = clip_grad_norm(grads, max_norm=2.0)
    assert_allclose(norm, expected_norm, rtol=norm_rtol, atol=0)
    assert grads["weight"] is weight and weight.dtype == dtype
    clipped = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    assert_allclose(clipped, 2.0, rtol=1e-5, atol=0)


def test_clip_grad_norm_leaves_small_gradients_unchanged():
    grads = clip_grads(np.float64, 0.01)
    saved = {key: value.copy() for key, value in grads.items()}
    clip_grad_norm(grads, max_norm=1.0)
    for key in grads:
        assert_allclose(grads[key], saved[key], rtol=0, atol=0)


def test_clip_grad_norm_leaves_non_finite_gradients_unchanged():
    grads = clip_grads(np.float64, 1.0)
    grads["bias"][1] = np.inf
    saved = {key: value.copy() for key, value in grads.items()}
    assert clip_grad_norm(grads, max_norm=1.0) == math.inf
    for key in grads:
        assert_allclose(grads[key], saved[key], rtol=0, atol=0)


def test_clip_grad_norm_rejects_non_positive_max_norm():
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(clip_grads(np.float64, 1.0), max_norm=0.0)
