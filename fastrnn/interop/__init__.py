"""Moving weights between fastrnn layers and Keras 3, ONNX and PyTorch.

- `to_keras_weights` / `load_keras_weights`: Keras `LSTM`, `GRU`, `SimpleRNN` weight lists.
- `to_onnx` / `from_onnx`: ONNX models of `LSTM`, `GRU`, `RNN` nodes (needs the `onnx` package).
- `load_torch_state_dict` / `from_torch`: `torch.nn.LSTM/GRU/RNN` state_dicts and modules
  (LSTMs with `proj_size > 0` are refused with a ValueError: not supported yet).

None of Keras, ONNX or PyTorch is needed to import this module; `pip install "fastrnn[interop]"`
installs onnx and onnxruntime.
"""
from .keras import load_keras_weights, to_keras_weights
from .onnx import from_onnx, to_onnx
from .torch import from_torch, load_torch_state_dict

__all__ = ["to_keras_weights", "load_keras_weights", "to_onnx", "from_onnx", "load_torch_state_dict", "from_torch"]
