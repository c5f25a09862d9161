"""The speed limit of a row: GFLOP/s of one plain GEMM of the recurrent shape, (B x H) @ (H x G*H), the
product cbptt must run once per time step and cannot batch over time.

Measured with scipy.linalg.blas.sgemm/dgemm, i.e. the OpenBLAS inside SciPy's wheel that cbptt calls through
scipy.linalg.cython_blas, under the same threadpoolctl limit as cbptt in the same run. Operands are
Fortran-ordered and C is overwritten in place, so no call copies or allocates. Each call still pays the f2py
wrapper's Python overhead (about 0.3 us), which cbptt, calling from C, does not: it is measured on a 1 x 1 x 1
call in the same way and subtracted. Where the GEMM itself takes less than the overhead (B = 1), the figure
is rough and the report says so.
"""
import statistics
import time

import numpy as np
import scipy.linalg.blas as blas

_cache = {}


def _per_call(gemm, a, b, c, min_batch_s, batches):
    """Median seconds per call over `batches` batches of back-to-back calls, each batch >= min_batch_s."""
    n = 1
    while True:                                   # calibrate the batch size (and warm up)
        t0 = time.perf_counter()
        for _ in range(n):
            gemm(1.0, a, b, 0.0, c, overwrite_c=1)
        if time.perf_counter() - t0 >= min_batch_s:
            break
        n *= 2
    per_call = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(n):
            gemm(1.0, a, b, 0.0, c, overwrite_c=1)
        per_call.append((time.perf_counter() - t0) / n)
    return statistics.median(per_call)


def _operands(m, k, n, dtype, rng):
    a = np.asfortranarray(rng.uniform(-1, 1, size=(m, k)).astype(dtype))
    b = np.asfortranarray(rng.uniform(-1, 1, size=(k, n)).astype(dtype))
    return a, b, np.zeros((m, n), dtype, order="F")


def recurrent_gemm(B, H, G, dtype, threads, min_batch_s=0.02, batches=7):
    """GFLOP/s of (B x H) @ (H x G*H), measured once per (B, H, G, dtype, threads) in a run and cached."""
    key = (B, H, G, np.dtype(dtype).name, threads)
    if key not in _cache:
        gemm = blas.sgemm if np.dtype(dtype) == np.float32 else blas.dgemm
        rng = np.random.default_rng(0)
        a, b, c = _operands(B, H, G * H, dtype, rng)
        out = gemm(1.0, a, b, 0.0, c, overwrite_c=1)
        assert np.shares_memory(out, c), "sgemm/dgemm copied C: the timing would include an allocation"
        t_call = _per_call(gemm, a, b, c, min_batch_s, batches)
        t_empty = _per_call(gemm, *_operands(1, 1, 1, dtype, rng), min_batch_s, batches)
        flops = 2 * B * H * G * H
        t_blas = t_call - t_empty
        _cache[key] = {
            "m_k_n": [B, H, G * H], "flops": flops, "call_us": t_call * 1e6, "overhead_us": t_empty * 1e6,
            "gflops_raw": flops / t_call * 1e-9,
            # the call overhead removed; when it is most of the call, keep the raw figure (a lower bound)
            "rough": t_blas < t_empty,
            "gflops": flops / t_blas * 1e-9 if t_blas > 0.1 * t_call else flops / t_call * 1e-9,
        }
    return _cache[key]
