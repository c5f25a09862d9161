"""The products of the compiled core against NumPy: the row-major BLAS shim (_blas.pxd) through
its Python twins, the packed-panel product of the per-step recurrent GEMMs and the
weight-gradient kernel (_core/panels.h, AVX-512F) through their test hooks in _engine.

The twins are Cython fused functions whose first fused argument is a scalar, and Cython's
dispatcher maps a Python float only to the double version (np.float32 scalars match nothing),
so each test picks the specialisation explicitly: ``gemm_twin["float"]`` / ``["double"]``.
"""
import itertools

import numpy as np
import pytest

from cbptt import _engine, _kernels
from cbptt._blas import gemm_twin, gemv_twin

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
SPEC = {np.float32: "float", np.float64: "double"}
DTYPES = [np.float32, np.float64]
ALPHA, BETA = 0.7, -1.3

# (m, n, k): C is (m, n), op(A) is (m, k), op(B) is (k, n); 1-row, 1-column, k == 1, non-square
GEMM_SHAPES = [(1, 1, 1), (1, 5, 3), (4, 1, 3), (3, 4, 1), (1, 1, 7), (2, 7, 5), (6, 3, 8),
               (5, 2, 2)]
# A (rows, cols)
GEMV_SHAPES = [(1, 1), (1, 6), (6, 1), (3, 5), (7, 2)]


def _close(got, expected, bound, dtype):
    """|got - expected| <= rtol * bound elementwise, bound = |alpha| |A| |B| + |beta| |C|: a
    relative test that does not break down when the exact result cancels to about zero."""
    err = np.abs(got.astype(np.float64) - expected)
    worst = np.max(err / bound)
    assert worst <= RTOL[dtype], f"relative error {worst:.3g} > {RTOL[dtype]}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES)
def test_gemm_matches_numpy(dtype, trans_a, trans_b, m, n, k):
    rng = np.random.default_rng(100 * m + 10 * n + k)
    A = rng.normal(size=(m, k)).astype(dtype)           # op(A)
    B = rng.normal(size=(k, n)).astype(dtype)           # op(B)
    a = np.ascontiguousarray(A.T) if trans_a else A     # what is stored
    b = np.ascontiguousarray(B.T) if trans_b else B
    c = rng.normal(size=(m, n)).astype(dtype)
    c0, a0, b0 = c.copy(), a.copy(), b.copy()

    gemm_twin[SPEC[dtype]](trans_a, trans_b, ALPHA, a, b, BETA, c)

    A64, B64, C64 = (x.astype(np.float64) for x in (A, B, c0))
    expected = ALPHA * A64 @ B64 + BETA * C64
    bound = abs(ALPHA) * np.abs(A64) @ np.abs(B64) + abs(BETA) * np.abs(C64)
    _close(c, expected, bound, dtype)
    assert c.dtype == dtype and c.shape == (m, n)
    np.testing.assert_array_equal(a, a0)                # operands are read only
    np.testing.assert_array_equal(b, b0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("rows,cols", GEMV_SHAPES)
def test_gemv_matches_numpy(dtype, trans_a, rows, cols):
    rng = np.random.default_rng(10 * rows + cols)
    a = rng.normal(size=(rows, cols)).astype(dtype)
    n_in, n_out = (rows, cols) if trans_a else (cols, rows)
    x = rng.normal(size=n_in).astype(dtype)
    y = rng.normal(size=n_out).astype(dtype)
    y0, a0, x0 = y.copy(), a.copy(), x.copy()

    gemv_twin[SPEC[dtype]](trans_a, ALPHA, a, x, BETA, y)

    A64 = a.astype(np.float64).T if trans_a else a.astype(np.float64)
    x64, y64 = x.astype(np.float64), y0.astype(np.float64)
    expected = ALPHA * A64 @ x64 + BETA * y64
    bound = abs(ALPHA) * np.abs(A64) @ np.abs(x64) + abs(BETA) * np.abs(y64)
    _close(y, expected, bound, dtype)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_gemm_beta_zero_ignores_garbage_in_c(dtype):
    """beta == 0: C is overwritten, NaN already in C must not leak (BLAS semantics)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 4)).astype(dtype)
    b = rng.normal(size=(4, 2)).astype(dtype)
    c = np.full((3, 2), np.nan, dtype)
    gemm_twin[SPEC[dtype]](False, False, 1.0, a, b, 0.0, c)
    np.testing.assert_allclose(c, a.astype(np.float64) @ b.astype(np.float64),
                               rtol=RTOL[dtype] * 10, atol=RTOL[dtype])


def test_twins_reject_mismatched_shapes():
    a = np.ones((2, 3))
    with pytest.raises(ValueError, match="shapes"):
        gemm_twin(False, False, 1.0, a, np.ones((2, 3)), 0.0, np.ones((2, 3)))
    with pytest.raises(ValueError, match="shapes"):
        gemv_twin(False, 1.0, a, np.ones(2), 0.0, np.ones(2))


# The packed-panel product (_core/panels.h): every edge (rows not a multiple of its six-row block,
# columns not a multiple of a panel, one column, beta 0 and 1, column blocks)

needs_panels = pytest.mark.skipif(not _engine.panels_supported(),
                                  reason="the panel kernels are off (no AVX-512F, or CBPTT_ISA below avx512)")
WIDTH = {np.float32: 64, np.float64: 32}


@needs_panels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("rows", [1, 5, 6, 7, 13])
@pytest.mark.parametrize("depth, cols", [(1, 1), (3, 15), (16, 64), (37, 65), (70, 130)])
def test_the_kernel_computes_a_product(dtype, trans, beta, rows, depth, cols):
    rng = np.random.default_rng(rows * 1000 + depth + cols)
    a = rng.standard_normal((rows, depth)).astype(dtype)
    b = rng.standard_normal((cols, depth) if trans else (depth, cols)).astype(dtype)
    c = rng.standard_normal((rows, cols)).astype(dtype)
    want = a.astype(np.float64) @ (b.T if trans else b).astype(np.float64) + beta * c
    _kernels.panel_product(a, b, trans, beta, c, 0, cols)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(c, want, rtol=tol, atol=tol)


@needs_panels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_column_block_leaves_the_other_columns_alone(dtype):
    rng = np.random.default_rng(0)
    width = WIDTH[dtype]
    cols = 3 * width + 5
    a = rng.standard_normal((9, 20)).astype(dtype)
    b = rng.standard_normal((20, cols)).astype(dtype)
    c = rng.standard_normal((9, cols)).astype(dtype)
    before = c.copy()
    _kernels.panel_product(a, b, False, 0.0, c, width, width + 5)
    block = slice(width, 2 * width + 5)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(c[:, block], a @ b[:, block], rtol=tol, atol=tol)
    np.testing.assert_array_equal(c[:, :width], before[:, :width])
    np.testing.assert_array_equal(c[:, 2 * width + 5:], before[:, 2 * width + 5:])
    with pytest.raises(ValueError, match="multiple of"):
        _kernels.panel_product(a, b, False, 0.0, c, 5, 10)


# The weight-gradient kernel: dW = dA^T @ inputs, read in place (cbptt_wgrad)

@needs_panels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("rows", [1, 5, 6, 7, 13])
@pytest.mark.parametrize("depth, cols", [(1, 1), (3, 15), (16, 64), (129, 65), (300, 130)])
def test_the_weight_gradient_kernel_computes_a_transposed_product(dtype, beta, rows, depth,
                                                                  cols):
    # depth past 128 crosses the kernel's blocks of k (beta only on the first)
    rng = np.random.default_rng(rows * 1000 + depth + cols)
    a = rng.standard_normal((depth, rows)).astype(dtype)
    b = rng.standard_normal((depth, cols)).astype(dtype)
    c = rng.standard_normal((rows, cols)).astype(dtype)
    sums = rng.standard_normal(rows).astype(dtype)
    want = a.T.astype(np.float64) @ b.astype(np.float64) + beta * c
    want_sums = a.astype(np.float64).sum(axis=0) + beta * sums
    if beta == 0:
        c[:], sums[:] = np.nan, np.nan       # beta 0 overwrites: old values never read
    _kernels.weight_gradient(a, b, beta, c, sums)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(c, want, rtol=tol, atol=tol)
    np.testing.assert_allclose(sums, want_sums, rtol=tol, atol=tol)
