"""Type stubs for the compiled sequence engine."""
from typing import Optional

import numpy as np

CELLS: dict[str, int]
GATES: dict[str, int]
LOSSES: dict[str, int]
STEP_THREADS_FLOPS: int

def param_layout(cell: str, num_layers: int, input_size: int, hidden_size: int,
                 output_size: int) -> list[tuple[str, tuple[int, ...], int]]: ...
def param_count(cell: str, num_layers: int, input_size: int, hidden_size: int,
                output_size: int) -> int: ...
def all_finite(array: np.ndarray) -> bool: ...
def local_thread_control() -> bool: ...
def _use_local_thread_control(set_address: int, get_address: int = ...) -> None: ...
def set_team(parts: int = ..., min_flops: float = ..., min_batch: int = ...,
             exact: bool = ..., column_flops: float = ...) -> dict[str, object]: ...
def team_available() -> bool: ...
def set_transposed_limit(mnk: float = ...) -> float: ...
def set_panels(enabled: bool = ..., min_mnk: float = ...) -> tuple[bool, float]: ...
def panels_supported() -> bool: ...
def _panel_product(a: np.ndarray, b: np.ndarray, trans: bool, beta: float, c: np.ndarray,
                   first: int, count: int) -> None: ...
def set_chunking(rows: int = ..., min_steps: int = ...,
                 whole_gated_input: bool = ...) -> tuple[int, int, bool]: ...

class Engine:
    dtype: np.dtype
    training: bool
    grad_sq_norm: float
    loss_terms: float
    last_parts: int
    batch: int
    steps: int
    workspace_bytes: int
    chunk_steps: int
    panels: bool
    def __init__(self, cell: str, num_layers: int, input_size: int, hidden_size: int,
                 output_size: int, batch: int, steps: int, dtype: object,
                 many_to_one: bool = ..., loss: str = ..., loss_start: int = ...,
                 training: bool = ...) -> None: ...
    def loss_and_grad(self, x: np.ndarray, target: np.ndarray, params: np.ndarray,
                      grads: np.ndarray, h0: Optional[np.ndarray] = ...,
                      dh0: Optional[np.ndarray] = ..., h_final: Optional[np.ndarray] = ...,
                      c0: Optional[np.ndarray] = ..., dc0: Optional[np.ndarray] = ...,
                      c_final: Optional[np.ndarray] = ..., weight: Optional[np.ndarray] = ...,
                      lengths: Optional[np.ndarray] = ...,
                      flow: Optional[np.ndarray] = ...) -> float: ...
    def predict(self, x: np.ndarray, params: np.ndarray, out: np.ndarray,
                h0: Optional[np.ndarray] = ..., h_final: Optional[np.ndarray] = ...,
                c0: Optional[np.ndarray] = ..., c_final: Optional[np.ndarray] = ...,
                lengths: Optional[np.ndarray] = ...) -> None: ...
    def states(self) -> tuple[np.ndarray, Optional[np.ndarray]]: ...
