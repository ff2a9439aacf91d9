"""fastrnn: fast LSTM, GRU and Elman-RNN layers for NumPy.

Fused Cython kernels (`backend="cython"`) with a pure-NumPy reference (`backend="reference"`)
that reads like the equations; both compute SPEC §2 with PyTorch's weight names and layout.
"""
from ._backends import available_backends
from .layers import GRU, LSTM, RNN

__version__ = "0.1.0"

__all__ = ["LSTM", "GRU", "RNN", "available_backends"]
