"""Toolkit additions and hardening: probability targets, softmax, perplexity, clip_grad_value,
validate-before-write, hyper-parameter checks, float16 losses, and the fast paths' edge cases."""
import math
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastrnn
from fastrnn import gradcheck, losses, optim
from fastrnn.clip import clip_grad_norm, clip_grad_value
from fastrnn.modules import Embedding, Linear
from test_toolkit import ATOL, RTOL, assert_loss_matches_torch

DTYPES = [np.float32, np.float64]


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def rng(seed=0):
    return np.random.default_rng(seed)


def probability_rows(generator, shape, dtype):
    """Random rows of non-negative weights; every other row is scaled not to sum to 1."""
    rows = generator.random(shape)
    rows /= rows.sum(axis=1, keepdims=True)
    rows[::2] *= 1.7
    return rows.astype(dtype)


# -- softmax_cross_entropy with probability targets ---------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_with_probability_targets_matches_torch(torch, dtype):
    generator = rng(1)
    logits = (3 * generator.standard_normal((7, 5))).astype(dtype)
    targets = probability_rows(generator, (7, 5), dtype)
    assert_loss_matches_torch(torch, losses.softmax_cross_entropy(logits, targets),
                              torch.nn.functional.cross_entropy, logits, targets)


def test_cross_entropy_probability_targets_gradient_matches_finite_differences():
    generator = rng(2)
    logits = generator.standard_normal((4, 6))
    targets = probability_rows(generator, (4, 6), np.float64)
    _, dlogits = losses.softmax_cross_entropy(logits, targets)
    gradcheck(lambda: losses.softmax_cross_entropy(logits, targets)[0], {"logits": logits},
              {"logits": dlogits}, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_hot_probability_targets_equal_index_targets(dtype):
    generator = rng(3)
    logits = (4 * generator.standard_normal((6, 5))).astype(dtype)
    indices = generator.integers(0, 5, 6)
    one_hot = np.eye(5, dtype=dtype)[indices]
    loss_i, grad_i = losses.softmax_cross_entropy(logits, indices)
    loss_p, grad_p = losses.softmax_cross_entropy(logits, one_hot)
    assert_allclose(loss_p, loss_i, rtol=RTOL[dtype], atol=ATOL[dtype])
    assert_allclose(grad_p, grad_i, rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_probability_targets_exact_for_huge_logits(dtype):
    # Row 0: 1e4 against 0, all the mass on class 1: the loss is 1e4. Row 1: equal logits, log 2.
    logits = np.array([[1e4, 0.0], [1e4, 1e4]], dtype=dtype)
    targets = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=dtype)
    loss, _ = losses.softmax_cross_entropy(logits, targets)
    assert_allclose(loss, (1e4 + math.log(2)) / 2, rtol=RTOL[dtype], atol=0)


@pytest.mark.parametrize(
    "targets, error, pattern",
    [
        (np.zeros((3, 4)), ValueError, r"shape of logits \(2, 3\), got \(3, 4\)"),
        (np.array([[0.5, 0.5, -0.1], [1.0, 0.0, 0.0]]), ValueError, r"finite and >= 0, got -0\.1"),
        (np.array([[0.5, np.nan, 0.5], [1.0, 0.0, 0.0]]), ValueError, r"finite and >= 0, got nan"),
        (np.array([[0.5, np.inf, 0.5], [1.0, 0.0, 0.0]]), ValueError, r"finite and >= 0, got inf"),
        (np.array([0.0, 1.0]), TypeError, r"targets must be class indices .*float64.*\(2,\)"),
        (np.zeros((2, 3, 1)), TypeError, r"targets must be class indices .*\(2, 3, 1\)"),
        (np.array(["a", "b"]), TypeError, r"targets .*integers"),
    ],
)
def test_cross_entropy_rejects_bad_targets_naming_them(targets, error, pattern):
    with pytest.raises(error, match=pattern):
        losses.softmax_cross_entropy(np.zeros((2, 3)), targets)


def test_cross_entropy_ignore_index_with_probability_targets_is_an_error():
    with pytest.raises(ValueError, match="ignore_index applies to class-index targets only"):
        losses.softmax_cross_entropy(np.zeros((2, 3)), np.full((2, 3), 1 / 3), ignore_index=0)


def test_cross_entropy_probability_targets_of_no_rows_is_zero():
    loss, dlogits = losses.softmax_cross_entropy(np.zeros((0, 3)), np.zeros((0, 3)))
    assert loss == 0.0 and dlogits.shape == (0, 3)


# -- the shifts of softmax_cross_entropy: one maximum for the whole array, or one per row -------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("low, high", [(-3.0, 3.0), (-39.5, 39.5), (-200.0, 200.0)],
                         ids=["one-shift", "one-shift-widest", "per-row-shift"])
def test_cross_entropy_matches_torch_whichever_shift(torch, dtype, low, high):
    # Rows offset within [low, high]: one shift for the whole array while the range is within
    # losses.SAFE_RANGE (80 for float32), one per row beyond it.
    generator = rng(4)
    offsets = generator.uniform(low, high, (64, 1))
    offsets[:2, 0] = low, high
    logits = (offsets + 0.1 * generator.standard_normal((64, 9))).astype(dtype)
    targets = generator.integers(0, 9, 64)
    assert_loss_matches_torch(torch, losses.softmax_cross_entropy(logits, targets),
                              torch.nn.functional.cross_entropy, logits, targets)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_ignored_rows_may_hold_anything(dtype):
    generator = rng(5)
    logits = generator.standard_normal((4, 3)).astype(dtype)
    targets = np.array([0, -1, 2, -1])
    clean_loss, clean_grad = losses.softmax_cross_entropy(logits, targets, ignore_index=-1)
    logits[1] = [np.inf, -np.inf, np.nan]
    logits[3] = [1e30, -1e30, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = losses.softmax_cross_entropy(logits, targets, ignore_index=-1)
    assert loss == clean_loss
    assert_allclose(grad, clean_grad, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_nan_logit_gives_nan_loss(dtype):
    logits = np.zeros((2, 3), dtype=dtype)
    logits[1, 2] = np.nan
    loss, dlogits = losses.softmax_cross_entropy(logits, np.array([0, 1]))
    assert math.isnan(loss)
    assert np.isnan(dlogits[1]).all()


# -- float16 losses compute in float32 ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_cross_entropy_over_70000_classes_is_finite_and_exact(dtype):
    # float16 summed the normaliser in float16 before: 70,000 terms near 1 overflowed to inf.
    generator = rng(6)
    logits = generator.uniform(-0.01, 0.01, (3, 70_000)).astype(dtype)
    targets = np.array([0, 69_999, 12_345])
    loss, dlogits = losses.softmax_cross_entropy(logits, targets)
    exact = logits.astype(np.float64)
    log_norm = np.log(np.exp(exact).sum(axis=1))
    expected = float(np.mean(log_norm - exact[np.arange(3), targets]))
    assert math.isfinite(loss)
    assert_allclose(loss, expected, rtol=1e-6, atol=0)
    assert dlogits.dtype == dtype
    probs = np.exp(exact - log_norm[:, None])
    probs[np.arange(3), targets] -= 1
    # float16 gradients of about 5e-6 are subnormal there: spaced 6e-8 apart.
    rtol, atol = (1e-3, 6e-8) if dtype == np.float16 else (RTOL[dtype], 1e-12)
    assert_allclose(dlogits, probs / 3, rtol=rtol, atol=atol)


def test_mse_of_float16_computes_in_float32():
    # 300 squared differences of 20 sum to 120,000, beyond float16's 65,504.
    pred = np.full(300, 20.0, dtype=np.float16)
    loss, dpred = losses.mse(pred, np.zeros(300))
    assert_allclose(loss, 400.0, rtol=1e-6)
    assert dpred.dtype == np.float16
    assert_allclose(dpred.astype(np.float64), 2 * 20.0 / 300, rtol=1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_matches_float64_formula(dtype):
    generator = rng(7)
    pred, target = generator.standard_normal((2, 50, 3)).astype(dtype)
    loss, dpred = losses.mse(pred, target)
    diff = pred.astype(np.float64) - target
    assert_allclose(loss, np.mean(diff**2), rtol=RTOL[dtype])
    assert_allclose(dpred, 2 * diff / diff.size, rtol=RTOL[dtype], atol=ATOL[dtype])


# -- softmax and perplexity -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_matches_torch_on_any_axis(torch, dtype, axis):
    x = (5 * rng(8).standard_normal((3, 4, 5))).astype(dtype)
    out = fastrnn.softmax(x, axis=axis)
    assert out.dtype == dtype and out.shape == x.shape
    assert_allclose(out, torch.softmax(torch.tensor(x), dim=axis).numpy(), rtol=RTOL[dtype], atol=ATOL[dtype])
    assert_allclose(out.sum(axis=axis), 1.0, rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_is_stable_for_huge_and_tiny_values(dtype):
    x = np.array([[1e4, 1e4 - math.log(3)], [-1e4, -1e4], [0.0, -np.inf]], dtype=dtype)
    assert_allclose(fastrnn.softmax(x), [[0.75, 0.25], [0.5, 0.5], [1.0, 0.0]], rtol=1e-4 if dtype == np.float32
                    else 1e-10)


def test_softmax_of_float16_is_float16_and_does_not_modify_x():
    x = np.linspace(-3, 3, 70_000).astype(np.float16)[None, :]
    saved = x.copy()
    out = fastrnn.softmax(x)
    assert out.dtype == np.float16 and np.isfinite(out).all()
    assert_allclose(out.astype(np.float64).sum(), 1.0, rtol=1e-2)
    assert_allclose(x, saved, rtol=0, atol=0)


def test_softmax_of_empty_array_is_empty():
    assert fastrnn.softmax(np.zeros((0, 3))).shape == (0, 3)


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: fastrnn.softmax(np.zeros((2, 3)), axis=2), ValueError, r"axis must be in \[-2, 2\).*got 2"),
        (lambda: fastrnn.softmax(np.zeros((2, 3)), axis=1.0), TypeError, "axis must be an int"),
        (lambda: fastrnn.softmax(np.arange(3)), TypeError, r"x .*int64"),
    ],
)
def test_softmax_rejects_bad_arguments(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_perplexity_is_exp_of_torch_cross_entropy(torch):
    generator = rng(9)
    logits = generator.standard_normal((20, 7))
    targets = generator.integers(0, 7, 20)
    loss, _ = losses.softmax_cross_entropy(logits, targets)
    expected = math.exp(torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(targets)).item())
    assert_allclose(fastrnn.perplexity(loss), expected, rtol=1e-12)


def test_perplexity_of_uniform_prediction_is_the_class_count():
    loss, _ = losses.softmax_cross_entropy(np.zeros((5, 96)), np.arange(5))
    assert_allclose(fastrnn.perplexity(loss), 96.0, rtol=1e-12)


def test_perplexity_overflows_to_inf():
    assert fastrnn.perplexity(1e4) == math.inf
    assert fastrnn.perplexity(math.inf) == math.inf


@pytest.mark.parametrize("bad, error", [(-0.5, ValueError), (math.nan, ValueError), ("1", TypeError),
                                        (True, TypeError)])
def test_perplexity_rejects_bad_values_naming_them(bad, error):
    with pytest.raises(error, match="mean_nll"):
        fastrnn.perplexity(bad)


# -- clip_grad_value --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_grad_value_matches_torch(torch, dtype):
    generator = rng(10)
    grads = {"weight": (3 * generator.standard_normal((4, 5))).astype(dtype),
             "bias": (3 * generator.standard_normal(4)).astype(dtype)}
    tensors = []
    for value in grads.values():
        tensor = torch.zeros(value.shape, dtype=torch.float64 if dtype == np.float64 else torch.float32)
        tensor.grad = torch.tensor(value.copy())
        tensors.append(tensor)
    weight = grads["weight"]
    assert clip_grad_value(grads, 1.5) is None
    torch.nn.utils.clip_grad_value_(tensors, 1.5)
    assert grads["weight"] is weight and weight.dtype == dtype
    for value, tensor in zip(grads.values(), tensors):
        assert_allclose(value, tensor.grad.numpy(), rtol=0, atol=0)
    assert np.abs(weight).max() == np.float32(1.5)


def test_clip_grad_value_keeps_nan():
    grads = {"g": np.array([np.nan, 5.0, -5.0, 0.5])}
    clip_grad_value(grads, 1.0)
    assert np.isnan(grads["g"][0])
    assert_allclose(grads["g"][1:], [1.0, -1.0, 0.5], rtol=0, atol=0)


@pytest.mark.parametrize("bad, error", [(0.0, ValueError), (-1.0, ValueError), (math.inf, ValueError),
                                        (math.nan, ValueError), ("1", TypeError)])
def test_clip_grad_value_rejects_bad_clip_value_naming_it(bad, error):
    with pytest.raises(error, match="clip_value"):
        clip_grad_value({"g": np.ones(3)}, bad)


# -- validate every entry first, then write -----------------------------------------------------


def read_only(array):
    array.flags.writeable = False
    return array


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clip", [lambda grads: clip_grad_norm(grads, 1.0), lambda grads: clip_grad_value(grads, 1.0)],
                         ids=["norm", "value"])
def test_clipping_with_a_read_only_entry_names_it_and_changes_nothing(dtype, clip):
    # Before: clip_grad_norm scaled 'a', then failed with NumPy's message, not naming 'ro'.
    a = np.full(4, 10.0, dtype=dtype)
    grads = {"a": a, "ro": read_only(np.full(3, 10.0, dtype=dtype))}
    with pytest.raises(ValueError, match=r"grads\['ro'\] is read-only"):
        clip(grads)
    assert_allclose(a, 10.0, rtol=0, atol=0)


@pytest.mark.parametrize("clip", [lambda grads: clip_grad_norm(grads, 1.0), lambda grads: clip_grad_value(grads, 1.0)],
                         ids=["norm", "value"])
def test_clipping_names_an_entry_that_is_not_a_float_array(clip):
    a = np.full(4, 10.0)
    with pytest.raises(TypeError, match=r"grads\['steps'\] must be a float numpy array.*int64"):
        clip({"a": a, "steps": np.arange(3)})
    assert_allclose(a, 10.0, rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"grads\['list'\] .*got list"):
        clip({"list": [1.0, 2.0]})
    with pytest.raises(TypeError, match="grads must be a dict"):
        clip([a])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "second, grad, error, pattern",
    [
        ("read-only", None, ValueError, r"params\['b'\] is read-only"),
        ("int", None, TypeError, r"params\['b'\] must be a float numpy array.*int64"),
        (None, np.zeros((2, 2)), ValueError, r"grads\['b'\] must have shape \(3,\) like params\['b'\], got \(2, 2\)"),
        (None, np.zeros(3, dtype=np.int32), TypeError, r"grads\['b'\] must be a float array .*got dtype int32"),
    ],
)
def test_optimizer_step_validates_every_entry_before_writing(dtype, second, grad, error, pattern):
    a = np.ones(4, dtype=dtype)
    b = {"read-only": read_only(np.ones(3, dtype=dtype)), "int": np.ones(3, dtype=np.int64)}.get(
        second, np.ones(3, dtype=dtype))
    grads = {"a": np.ones(4, dtype=dtype), "b": np.ones(3, dtype=dtype) if grad is None else grad}
    optimizer = optim.Adam(lr=0.1)
    with pytest.raises(error, match=pattern):
        optimizer.step({"a": a, "b": b}, grads)
    assert_allclose(a, 1.0, rtol=0, atol=0)
    assert optimizer.state == {}


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: optim.SGD(lr=math.inf), "lr"),
        (lambda: optim.SGD(lr=math.nan), "lr"),
        (lambda: optim.SGD(lr=0.1, momentum=math.inf), "momentum"),
        (lambda: optim.SGD(lr=0.1, weight_decay=math.inf), "weight_decay"),
        (lambda: optim.Adagrad(lr=math.inf), "lr"),
        (lambda: optim.Adagrad(lr=0.1, eps=math.inf), "eps"),
        (lambda: optim.Adagrad(lr=0.1, eps=math.nan), "eps"),
        (lambda: optim.Adam(lr=0.1, eps=math.inf), "eps"),
        (lambda: optim.Adam(lr=-math.inf), "lr"),
        (lambda: optim.Adam(lr=0.1, betas=(math.nan, 0.9)), r"betas\[0\]"),
        (lambda: optim.Adam(lr=0.1, betas=(0.9, -0.1)), r"betas\[1\]"),
        (lambda: optim.Adam(lr=0.1, weight_decay=math.nan), "weight_decay"),
    ],
)
def test_optimizer_rejects_non_finite_hyperparameter_naming_it(make, name):
    # Before: inf passed the range checks (inf >= 0), and a step then wrote inf or NaN weights.
    with pytest.raises(ValueError, match=rf"{name} must be a finite number"):
        make()


@pytest.mark.parametrize("make", [lambda: optim.SGD(lr="0.1"), lambda: optim.Adam(lr=True),
                                  lambda: optim.Adam(lr=0.1, eps=None)])
def test_optimizer_rejects_non_numeric_hyperparameter(make):
    with pytest.raises(TypeError, match="must be a real number"):
        make()


def test_clip_grad_norm_rejects_nan_max_norm_and_takes_inf_as_measure_only():
    grads = {"g": np.full(4, 10.0)}
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(grads, math.nan)
    assert clip_grad_norm(grads, math.inf) == 20.0
    assert_allclose(grads["g"], 10.0, rtol=0, atol=0)


def test_clip_grad_norm_of_float32_past_float32_range_falls_back_to_float64():
    # The float32 sum of squares overflows (1e40 > 3.4e38); the norm, 2e20, does not.
    grads = {"g": np.full(4, 1e20, dtype=np.float32)}
    norm = clip_grad_norm(grads, 1.0)
    assert_allclose(norm, 2e20, rtol=1e-6)
    assert_allclose(grads["g"], 0.5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_clip_grad_norm_matches_float64_norm_for_each_dtype(dtype):
    grads = {"w": rng(11).standard_normal((30, 20)).astype(dtype), "b": np.arange(5, dtype=dtype)}
    expected = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    assert_allclose(clip_grad_norm(grads, 1e9), expected, rtol=1e-6 if dtype != np.float64 else 1e-12)


# -- optimizer state --------------------------------------------------------------------------


def test_optimizer_load_state_dict_of_none_is_a_type_error():
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        optim.Adam(lr=0.1).load_state_dict(None)


def test_optimizer_load_state_dict_checks_shapes_against_params_when_given():
    params = {"w": np.zeros((2, 3))}
    optimizer = optim.Adam(lr=0.1)
    optimizer.step(params, {"w": np.ones((2, 3))})
    before = optimizer.state_dict()
    bad = {"w/exp_avg": np.zeros((3, 2)), "w/exp_avg_sq": np.zeros((3, 2)), "w/step": np.array(1)}
    with pytest.raises(ValueError, match=r"state_dict\['w/exp_avg'\] must have shape \(2, 3\).*got \(3, 2\)"):
        optimizer.load_state_dict(bad, params=params)
    with pytest.raises(KeyError, match="'v'"):
        optimizer.load_state_dict({"v/exp_avg": np.zeros(1), "v/exp_avg_sq": np.zeros(1), "v/step": np.array(1)},
                                  params=params)
    for key, value in optimizer.state_dict().items():
        assert_allclose(value, before[key], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["sgd_momentum", "adagrad", "adam"])
def test_optimizer_state_of_another_float_dtype_is_used_in_the_parameters_dtype(name):
    make = {"sgd_momentum": lambda: optim.SGD(lr=0.1, momentum=0.9), "adagrad": lambda: optim.Adagrad(lr=0.1),
            "adam": lambda: optim.Adam(lr=0.01)}[name]
    generator = rng(12)
    params = {"w": generator.standard_normal((3, 4)).astype(np.float32)}
    grads = [{"w": generator.standard_normal((3, 4)).astype(np.float32)} for _ in range(4)]
    optimizer = make()
    for step_grads in grads[:2]:
        optimizer.step(params, step_grads)
    restored = make()
    restored.load_state_dict({key: value.astype(np.float64) if value.dtype.kind == "f" else value
                              for key, value in optimizer.state_dict().items()})
    restored_params = {"w": params["w"].copy()}
    for step_grads in grads[2:]:
        optimizer.step(params, step_grads)
        restored.step(restored_params, step_grads)
    assert restored_params["w"].dtype == np.float32
    assert_allclose(restored_params["w"], params["w"], rtol=1e-6, atol=1e-7)
    assert all(value.dtype == np.float32 for value in restored.state_dict().values() if value.ndim)


@pytest.mark.parametrize("name", ["sgd", "sgd_momentum", "adagrad", "adam"])
@pytest.mark.parametrize("layout", ["large", "transposed"])
def test_optimizer_matches_torch_on_large_and_non_contiguous_parameters(torch, name, layout):
    # "large" spans several update slices (optim.CHUNK elements each) and ends in a partial one;
    # "transposed" is a non-contiguous view, which must be updated in place all the same.
    make = {
        "sgd": (lambda: optim.SGD(lr=0.1, weight_decay=0.01), lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=0.01)),
        "sgd_momentum": (lambda: optim.SGD(lr=0.1, momentum=0.9),
                         lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
        "adagrad": (lambda: optim.Adagrad(lr=0.1), lambda p: torch.optim.Adagrad(p, lr=0.1)),
        "adam": (lambda: optim.Adam(lr=0.01, weight_decay=0.1),
                 lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1)),
    }[name]
    generator = rng(13)
    size = 2 * optim.CHUNK + 123
    base = generator.standard_normal((size, 1) if layout == "large" else (6, 5))
    param = base if layout == "large" else base.T
    tensor = torch.tensor(param.copy())
    ours, theirs = make[0](), make[1]([tensor])
    for _ in range(3):
        grad = generator.standard_normal(param.shape)
        ours.step({"p": param}, {"p": grad})
        tensor.grad = torch.tensor(grad)
        theirs.step()
    assert_allclose(param, tensor.numpy(), rtol=1e-10, atol=1e-12)
    if layout == "transposed":
        assert_allclose(base.T, tensor.numpy(), rtol=1e-10, atol=1e-12)


# -- Embedding and Linear fast paths --------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_backward_matches_scatter_add_with_many_repeats(dtype):
    generator = rng(14)
    layer = Embedding(50, 8, dtype=dtype, seed=0)
    indices = generator.integers(0, 20, (30, 17))  # rows 20..49 never looked up
    dy = generator.standard_normal((30, 17, 8)).astype(dtype)
    layer.grads["weight"][...] = 1.0  # backward adds to what is there
    layer(indices)
    layer.backward(dy)
    expected = np.ones((50, 8))
    np.add.at(expected, indices, dy.astype(np.float64))
    assert_allclose(layer.grads["weight"], expected, rtol=RTOL[dtype] * 10, atol=ATOL[dtype] * 10)


def test_embedding_backward_matches_torch(torch):
    generator = rng(15)
    layer = Embedding(12, 5, dtype=np.float64, seed=0)
    indices = generator.integers(0, 12, (9, 4))
    dy = generator.standard_normal((9, 4, 5))
    layer(indices)
    layer.backward(dy)
    weight = torch.tensor(layer.params["weight"], requires_grad=True)
    torch.nn.functional.embedding(torch.tensor(indices), weight).backward(torch.tensor(dy))
    assert_allclose(layer.grads["weight"], weight.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_embedding_backward_of_no_indices_adds_nothing():
    layer = Embedding(4, 3, dtype=np.float64, seed=0)
    layer(np.zeros((0, 2), dtype=np.int64))
    layer.backward(np.zeros((0, 2, 3)))
    assert not layer.grads["weight"].any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_bias_gradient_is_the_column_sum(dtype):
    generator = rng(16)
    layer = Linear(4, 3, dtype=dtype, seed=0)
    dy = generator.standard_normal((5, 7, 3)).astype(dtype)
    layer(generator.standard_normal((5, 7, 4)))
    layer.backward(dy)
    assert_allclose(layer.grads["bias"], dy.astype(np.float64).sum(axis=(0, 1)), rtol=RTOL[dtype],
                    atol=ATOL[dtype] * 10)
