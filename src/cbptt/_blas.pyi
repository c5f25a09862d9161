"""Type stubs for the BLAS layer's test twins."""
import numpy as np

def gemm_twin(trans_a: bool, trans_b: bool, alpha: float, a: np.ndarray, b: np.ndarray,
              beta: float, c: np.ndarray) -> None: ...
def gemv_twin(trans_a: bool, alpha: float, a: np.ndarray, x: np.ndarray, beta: float,
              y: np.ndarray) -> None: ...
