"""The compiled kernels: one Cython extension module per tier and per cell.

threads (the helper threads of a pass and the BLAS thread setting), buffers (the block cache of
pass buffers), products (BLAS and the packed AVX-512 products), scan (the generic pass over one
direction of one layer) and one module per cell, `lstm`, `gru`, `rnn`, mirroring
fastrnn/reference/: each gives `forward` and `backward` under the cell contract of
fastrnn/_backends.py. Importing this package imports none of them, so that one missing module
moves only its cell to the reference backend.
"""
