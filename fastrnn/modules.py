"""Linear and Embedding: the layers that go around a recurrent stack (SPEC §5).

They follow the recurrent layers' conventions: `forward` caches what `backward` needs,
`backward` ADDS the parameter gradients into `grads`, `params`/`grads` are dicts of arrays
updated in place, and any number of leading dimensions is accepted.
"""
import numpy as np

from ._checks import float_array, integer_array, positive_int, random_generator
from ._module import Module

__all__ = ["Linear", "Embedding"]


class Linear(Module):
    """y = x @ weight.T + bias over the last axis of x: (..., in_features) -> (..., out_features).

    Parameters `weight` (out_features, in_features) and, with bias=True, `bias` (out_features,),
    both drawn from U(-1/sqrt(in_features), 1/sqrt(in_features)) as torch.nn.Linear does.
    `backward` uses the weights current at the time it is called.
    """

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, seed=None):
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

    def forward(self, x):
        """y (..., out_features) for x (..., in_features)."""
        x = float_array("x", x, self.dtype)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {x.shape}")
        # A private copy: the caller may change x before calling backward.
        x_rows = np.array(x.reshape(-1, self.in_features), order="C")
        y = x_rows @ self.params["weight"].T
        if "bias" in self.params:
            y += self.params["bias"]
        self._cache = (x.shape, x_rows)
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def backward(self, dy):
        """dx (..., in_features) for dy (..., out_features); adds into grads["weight"], grads["bias"]."""
        x_shape, x_rows = self._cached()
        expected = x_shape[:-1] + (self.out_features,)
        dy = float_array("dy", dy, self.dtype)
        if dy.shape != expected:
            raise ValueError(f"dy must have shape {expected} (like forward's output), got {dy.shape}")
        dy_rows = dy.reshape(-1, self.out_features)
        self.grads["weight"] += dy_rows.T @ x_rows
        if "bias" in self.params:
            self.grads["bias"] += dy_rows.sum(axis=0)
        return (dy_rows @ self.params["weight"]).reshape(x_shape)


class Embedding(Module):
    """Row lookup: integer indices (...) -> weight[indices] (..., embedding_dim).

    Parameter `weight` (num_embeddings, embedding_dim) drawn from N(0, 1) as torch.nn.Embedding
    does. `backward` scatter-adds dy into the rows of grads["weight"] that were looked up
    (repeated indices accumulate) and returns None: indices have no gradient.
    """

    def __init__(self, num_embeddings, embedding_dim, *, dtype=np.float32, seed=None):
        super().__init__(dtype)
        self.num_embeddings = positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = positive_int("embedding_dim", embedding_dim)
        rng = random_generator(seed)
        self._add_param("weight", rng.standard_normal((self.num_embeddings, self.embedding_dim)))

    def __repr__(self):
        return (f"Embedding(num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, "
                f"dtype={self.dtype.name})")

    def forward(self, indices):
        """weight[indices], a fresh (..., embedding_dim) array."""
        indices = integer_array("indices", indices)
        if indices.size:
            low, high = indices.min(), indices.max()
            if low < 0 or high >= self.num_embeddings:
                bad = low if low < 0 else high
                raise ValueError(f"indices must be in [0, {self.num_embeddings}) (num_embeddings), got {bad}")
        self._cache = indices.copy()
        return np.take(self.params["weight"], self._cache, axis=0)

    def backward(self, dy):
        """Adds dy (..., embedding_dim) into grads["weight"] at the looked-up rows; returns None."""
        indices = self._cached()
        expected = indices.shape + (self.embedding_dim,)
        dy = float_array("dy", dy, self.dtype)
        if dy.shape != expected:
            raise ValueError(f"dy must have shape {expected} (like forward's output), got {dy.shape}")
        np.add.at(self.grads["weight"], indices, dy)
