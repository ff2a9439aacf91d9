"""Rank 1 raises while rank 0 waits for it in a gradient reduction: the job must end, not hang."""
import numpy as np

from fastrnn import distributed

distributed.abort_on_error()
if distributed.rank() == 1:
    raise RuntimeError("rank 1 fails on purpose")
distributed.average_gradients({"w": np.ones(3)})
