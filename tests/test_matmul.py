"""The private matrix kernels of src_c/matmul.h (through fastrnn._kernels.products' test
functions) against NumPy: pack_panels + matmul_packed, matmul_tn and colsum on ragged and edge
shapes, both dtypes, with and without accumulation, with leading dimensions wider than the
matrices."""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fastrnn._kernels import products

TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]

avx512 = pytest.mark.skipif(
    not products._packed_products_supported(),
    reason=(
        "matmul_packed and matmul_tn need AVX-512: "
        + ("this CPU lacks AVX-512" if products._packed_products_compiled()
           else "this build's compiler lacks the AVX-512 target")
    ),
)

# (m, n, k): ones, odd sizes, n not a multiple of the panel width (32 floats, 16 doubles), k = 1,
# m past the register block (8 rows) and past the row block (128 rows) of matmul_packed, k past
# matmul_tn's chunk (128 rows).
SHAPES = [(1, 1, 1), (1, 17, 1), (3, 5, 7), (8, 32, 1), (9, 33, 13), (7, 16, 64), (130, 47, 3),
          (20, 100, 130), (257, 65, 19)]


def padded(rng, rows, cols, dtype, extra):
    """A (rows, cols) view of random values with `extra` more columns of row stride."""
    return rng.standard_normal((rows, cols + extra)).astype(dtype)[:, :cols]


def transposed_copy(rng, b, extra):
    """bᵀ in a view with `extra` more columns of row stride."""
    copy = padded(rng, b.shape[1], b.shape[0], b.dtype, extra)
    copy[:] = b.T
    return copy


def assert_close(actual, desired, dtype, k):
    tol = TOLERANCE[dtype]
    scale = max(1.0, np.abs(desired).max())
    assert_allclose(actual, desired, rtol=tol, atol=tol * scale * np.sqrt(k))


def panel_width(dtype):
    return products._pack_panels(np.zeros((1, 1), dtype), False).size


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transposed", [False, True], ids=["B", "B_transposed"])
@pytest.mark.parametrize("k,n", [(1, 1), (3, 5), (2, 33), (5, 64), (4, 70)])
def test_pack_panels_lays_out_zero_padded_column_panels(k, n, transposed, dtype):
    rng = np.random.default_rng(0)
    b = padded(rng, k, n, dtype, extra=3)
    given = transposed_copy(rng, b, extra=2) if transposed else b
    packed = products._pack_panels(given, transposed)
    width = panel_width(dtype)
    panels = -(-n // width)
    assert packed.size == panels * width * k
    expected = np.zeros((k, panels * width), dtype)
    expected[:, :n] = b
    # panel p holds columns p*width .. (p+1)*width-1 as a contiguous (k, width) block
    layout = packed.reshape(panels, k, width).transpose(1, 0, 2).reshape(k, panels * width)
    assert_array_equal(layout, expected)


@avx512
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("accumulate", [False, True], ids=["store", "accumulate"])
@pytest.mark.parametrize("transposed", [False, True], ids=["B", "B_transposed"])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_matmul_packed_matches_numpy(m, n, k, transposed, accumulate, dtype):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a = padded(rng, m, k, dtype, extra=5)
    b = padded(rng, k, n, dtype, extra=1)
    given = transposed_copy(rng, b, extra=3) if transposed else b
    c0 = rng.standard_normal((m, n + 7)).astype(dtype)
    c = c0.copy()
    products._matmul_packed(a, products._pack_panels(given, transposed), n, c[:, :n], accumulate)
    expected = np.matmul(a.astype(np.float64), b.astype(np.float64))
    if accumulate:
        expected += c0[:, :n]
    assert_close(c[:, :n], expected, dtype, k)
    assert_array_equal(c[:, n:], c0[:, n:])  # past n, the leading dimension's padding is untouched


@avx512
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("accumulate", [False, True], ids=["store", "accumulate"])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_matmul_tn_matches_numpy(m, n, k, accumulate, dtype):
    rng = np.random.default_rng(m * 1000 + n * 10 + k + 1)
    a = padded(rng, k, m, dtype, extra=4)
    b = padded(rng, k, n, dtype, extra=9)
    c0 = rng.standard_normal((m, n + 2)).astype(dtype)
    c = c0.copy()
    products._matmul_tn(a, b, c[:, :n], accumulate)
    expected = np.matmul(a.T.astype(np.float64), b.astype(np.float64))
    if accumulate:
        expected += c0[:, :n]
    assert_close(c[:, :n], expected, dtype, k)
    assert_array_equal(c[:, n:], c0[:, n:])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,n", [(1, 1), (1, 33), (7, 5), (130, 17), (1000, 3)])
def test_colsum_matches_numpy(rows, n, dtype):
    rng = np.random.default_rng(rows + n)
    a = padded(rng, rows, n, dtype, extra=6)
    sums = products._colsum(a)
    assert sums.dtype == np.float64
    assert_allclose(sums, np.sum(a.astype(np.float64), axis=0), rtol=1e-12, atol=1e-12 * rows)
