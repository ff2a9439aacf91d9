"""Linear and Embedding: the layers that go around a recurrent stack (docs/toolkit.md §2, §3).

They follow the recurrent layers' conventions: `forward` caches what `backward` needs,
`backward` ADDS the parameter gradients into `grads`, `params`/`grads` are dicts of arrays
updated in place, and any number of leading dimensions is accepted.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from ._checks import float_array, integer_array, positive_int, random_generator
from ._grad_mode import is_grad_enabled
from ._module import Module
from ._typing import Seed

__all__ = ["Linear", "Embedding"]


class Linear(Module):
    """y = x @ weight.T + bias over the last axis of x: (..., in_features) -> (..., out_features).

    Parameters `weight` (out_features, in_features) and, with bias=True, `bias` (out_features,),
    both drawn from U(-1/sqrt(in_features), 1/sqrt(in_features)) as torch.nn.Linear does.
    `backward` uses the weights current at the time it is called.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the last axis of x and of y, >= 1.
    bias : bool, default True
        Whether to add a learned bias.
    dtype : numpy.float32 or numpy.float64, default float32
        Dtype of the parameters, gradients and outputs.
    seed : None, int or numpy.random.Generator
        Source of the initial weights.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype: DTypeLike = np.float32, seed: Seed = None) -> None:
        super().__init__(dtype)
        self.in_features = positive_int("in_features", in_features)
        self.out_features = positive_int("out_features", out_features)
        rng = random_generator(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        self._add_param("weight", rng.uniform(-bound, bound, (self.out_features, self.in_features)))
        if bias:
            self._add_param("bias", rng.uniform(-bound, bound, self.out_features))

    def __repr__(self):
        return (f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={'bias' in self.params}, dtype={self.dtype.name})")

    def forward(self, x: ArrayLike) -> np.ndarray:
        """y = x @ weight.T + bias.

        Parameters
        ----------
        x : array_like of float, shape (..., in_features)
            Converted to the layer's dtype.

        Returns
        -------
        numpy.ndarray, shape (..., out_features), the layer's dtype
        """
        # A private copy when kept: the caller may change x before calling backward.
        keep = is_grad_enabled()
        x = float_array("x", x, self.dtype, copy=keep)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {x.shape}")
        x_rows = x.reshape(-1, self.in_features)
        y = np.matmul(x_rows, self.params["weight"].T)
        if "bias" in self.params:
            y += self.params["bias"]
        self._cache = (x.shape, x_rows) if keep else None
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def backward(self, dy: ArrayLike) -> np.ndarray:
        """Gradient with respect to x; adds into grads["weight"] and grads["bias"].

        Parameters
        ----------
        dy : array_like of float, shape (..., out_features) like forward's output

        Returns
        -------
        dx : numpy.ndarray, shape (..., in_features) like forward's x, the layer's dtype
        """
        x_shape, x_rows = self._cached()
        expected = x_shape[:-1] + (self.out_features,)
        dy = float_array("dy", dy, self.dtype)
        if dy.shape != expected:
            raise ValueError(f"dy must have shape {expected} (like forward's output), got {dy.shape}")
        dy_rows = dy.reshape(-1, self.out_features)
        self.grads["weight"] += np.matmul(dy_rows.T, x_rows)
        if "bias" in self.params:
            # Column sums as a vector-matrix product: one BLAS call instead of a reduction.
            self.grads["bias"] += np.matmul(np.ones(dy_rows.shape[0], dtype=self.dtype), dy_rows)
        return np.matmul(dy_rows, self.params["weight"]).reshape(x_shape)


class Embedding(Module):
    """Row lookup: integer indices (...) -> weight[indices] (..., embedding_dim).

    Parameter `weight` (num_embeddings, embedding_dim) drawn from N(0, 1) as torch.nn.Embedding
    does. `backward` scatter-adds dy into the rows of grads["weight"] that were looked up
    (repeated indices accumulate) and returns None: indices have no gradient.

    Parameters
    ----------
    num_embeddings, embedding_dim : int
        Rows (the vocabulary size) and columns of the table, >= 1.
    dtype : numpy.float32 or numpy.float64, default float32
        Dtype of the table, its gradient and the outputs.
    seed : None, int or numpy.random.Generator
        Source of the initial table.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, dtype: DTypeLike = np.float32,
                 seed: Seed = None) -> None:
        super().__init__(dtype)
        self.num_embeddings = positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = positive_int("embedding_dim", embedding_dim)
        rng = random_generator(seed)
        self._add_param("weight", rng.standard_normal((self.num_embeddings, self.embedding_dim)))

    def __repr__(self):
        return (f"Embedding(num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, "
                f"dtype={self.dtype.name})")

    def forward(self, indices: ArrayLike) -> np.ndarray:
        """The rows of weight at `indices`.

        Parameters
        ----------
        indices : array_like of int, any shape (...), values in [0, num_embeddings)

        Returns
        -------
        numpy.ndarray, shape (..., embedding_dim), the layer's dtype; a new array
        """
        indices = integer_array("indices", indices)
        if indices.size:
            low, high = indices.min(), indices.max()
            if low < 0 or high >= self.num_embeddings:
                bad = low if low < 0 else high
                raise ValueError(f"indices must be in [0, {self.num_embeddings}) (num_embeddings), got {bad}")
        self._cache = indices.copy() if is_grad_enabled() else None
        return np.take(self.params["weight"], indices, axis=0)

    def backward(self, dy: ArrayLike) -> None:
        """Add dy into the rows of grads["weight"] that forward looked up; returns None.

        Parameters
        ----------
        dy : array_like of float, shape (..., embedding_dim) like forward's output
        """
        indices = self._cached()
        expected = indices.shape + (self.embedding_dim,)
        dy = float_array("dy", dy, self.dtype)
        if dy.shape != expected:
            raise ValueError(f"dy must have shape {expected} (like forward's output), got {dy.shape}")
        if not indices.size:
            return
        # Sort the rows of dy by index and sum each run of equal indices in one pass
        # (np.add.at, the obvious scatter-add, goes element by element).
        flat = indices.reshape(-1)
        order = np.argsort(flat, kind="stable")
        sorted_indices = flat[order]
        run_starts = np.flatnonzero(sorted_indices[1:] != sorted_indices[:-1]) + 1
        run_starts = np.concatenate(([0], run_starts))
        run_sums = np.add.reduceat(dy.reshape(-1, self.embedding_dim)[order], run_starts, axis=0)
        # The indices of the runs are distinct, so this fancy-indexed += adds each sum once.
        self.grads["weight"][sorted_indices[run_starts]] += run_sums
