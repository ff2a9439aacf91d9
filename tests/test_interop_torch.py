"""torch.nn.LSTM/GRU/RNN modules and state_dicts into fastrnn layers (proj_size LSTMs: tests/test_projection.py)."""
import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastrnn
from fastrnn.interop import from_torch, load_torch_state_dict

torch = pytest.importorskip("torch")

D, H, B, T = 3, 6, 2, 5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [
    lambda: torch.nn.LSTM(D, H, num_layers=2, bidirectional=True),
    lambda: torch.nn.GRU(D, H, batch_first=True, bias=False),
    lambda: torch.nn.RNN(D, H, num_layers=2, nonlinearity="relu"),
], ids=["lstm", "gru", "rnn_relu"])
def test_from_torch_computes_what_torch_computes(make, dtype):
    torch.manual_seed(0)
    module = make().to(torch.float64 if dtype == np.float64 else torch.float32).eval()
    layer = from_torch(module)
    assert layer.dtype == dtype and not layer.training
    assert layer.batch_first == module.batch_first and layer.bias == module.bias
    x = np.random.default_rng(1).standard_normal((B, T, D) if module.batch_first else (T, B, D)).astype(dtype)
    y, _ = layer(x)
    with torch.no_grad():
        y_torch = module(torch.from_numpy(x))[0].numpy()
    tolerance = dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    assert_allclose(y, y_torch, **tolerance)


def test_state_dict_of_tensors_loads():
    torch.manual_seed(1)
    module = torch.nn.GRU(D, H)
    layer = fastrnn.GRU(D, H, seed=3)
    load_torch_state_dict(layer, module.state_dict())
    for name, value in module.state_dict().items():
        assert_allclose(layer.params[name], value.numpy(), rtol=0, atol=0)


def test_proj_size_state_dict_into_a_layer_without_projection_is_refused_naming_it():
    module = torch.nn.LSTM(D, H, proj_size=2)
    layer = fastrnn.LSTM(D, H, seed=0)
    before = layer.state_dict()
    with pytest.raises(ValueError, match=r"'weight_hr_l0'.*proj_size=2"):
        load_torch_state_dict(layer, module.state_dict())
    for name, value in layer.params.items():
        assert_allclose(value, before[name], rtol=0, atol=0)
    with pytest.raises(TypeError, match="Linear"):
        from_torch(torch.nn.Linear(2, 3))
