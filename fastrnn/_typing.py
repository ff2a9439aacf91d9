"""Type aliases of the public API's hints."""
from typing import Dict, Tuple, Union

import numpy as np

#: What a `seed` argument takes: None (fresh entropy), an int >= 0, or a Generator used as is.
Seed = Union[int, np.random.Generator, None]
#: A recurrent state: one array (RNN, GRU: h) or a tuple of them (LSTM: (h, c)).
State = Union[np.ndarray, Tuple[np.ndarray, ...]]
#: Arrays by name: parameters, gradients, state_dicts.
Arrays = Dict[str, np.ndarray]
