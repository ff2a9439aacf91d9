"""fastrnn: fast LSTM, GRU and Elman-RNN layers for NumPy.

Fused Cython kernels (`backend="cython"`) with a pure-NumPy reference (`backend="reference"`)
that reads like the equations; both compute the cells of docs/math.md with PyTorch's weight names and layout.
"""
from . import losses, optim
from ._backends import available_backends
from ._grad_mode import is_grad_enabled, no_grad
from .cells import GRUCell, LSTMCell, RNNCell
from .clip import clip_grad_norm, clip_grad_value
from ._gradcheck import gradcheck, numerical_gradient
from .layers import GRU, LSTM, RNN
from .losses import perplexity, softmax
from .modules import Embedding, Linear
from .serialization import Checkpoint, load, save

__version__ = "0.1.0"

__all__ = [
    "LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "Linear", "Embedding", "losses", "optim",
    "clip_grad_norm", "clip_grad_value", "softmax", "perplexity", "no_grad", "is_grad_enabled",
    "gradcheck", "numerical_gradient", "available_backends", "save", "load", "Checkpoint",
]
