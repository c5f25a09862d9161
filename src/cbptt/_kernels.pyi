"""Type stubs for the test wrappers of the cell and loss kernels."""
from typing import Optional

import numpy as np

GATES: dict[str, int]

def gate_forward(cell: str, gates: np.ndarray, bias: np.ndarray, *,
                 c_prev: Optional[np.ndarray] = ..., h_prev: Optional[np.ndarray] = ...,
                 rec: Optional[np.ndarray] = ...,
                 b_hh: Optional[np.ndarray] = ...) -> dict[str, np.ndarray]: ...
def gate_backward(cell: str, gates: np.ndarray, dh: np.ndarray, *,
                  dh_inject: Optional[np.ndarray] = ..., c_prev: Optional[np.ndarray] = ...,
                  c: Optional[np.ndarray] = ..., dc: Optional[np.ndarray] = ...,
                  h_prev: Optional[np.ndarray] = ..., hn: Optional[np.ndarray] = ...,
                  da: Optional[np.ndarray] = ...) -> dict[str, np.ndarray]: ...
def loss(kind: str, pred: np.ndarray, target: np.ndarray, weight: Optional[np.ndarray] = ...,
         scale: float = ..., *, first: int = ..., row0: int = ..., rows: Optional[int] = ...,
         dpred: Optional[np.ndarray] = ...) -> tuple[float, np.ndarray]: ...
def activation(name: str, array: np.ndarray) -> np.ndarray: ...
def weight_gradient(a: np.ndarray, b: np.ndarray, beta: float, c: np.ndarray,
                    sums: Optional[np.ndarray] = ...) -> None: ...
def panel_product(a: np.ndarray, b: np.ndarray, trans: bool, beta: float, c: np.ndarray,
                  first: int, count: int) -> None: ...
