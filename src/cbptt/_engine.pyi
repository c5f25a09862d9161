"""Type stubs for the compiled sequence engine."""
from typing import Optional

import numpy as np

CELLS: dict[str, int]
GATES: dict[str, int]
LOSSES: dict[str, int]
STEP_THREADS_FLOPS: int
TEAM_MAX: int
PATH_NAMES: dict[int, str]

def param_layout(cell: str, num_layers: int, input_size: int, hidden_size: int,
                 output_size: int) -> list[tuple[str, tuple[int, ...], int]]: ...
def param_count(cell: str, num_layers: int, input_size: int, hidden_size: int,
                output_size: int) -> int: ...
def path_names(flags: int) -> frozenset[str]: ...
def local_thread_control() -> bool: ...
def _use_local_thread_control(set_address: int, get_address: int = ...) -> None: ...
def team_available() -> bool: ...
def core_round_trip_ns(rounds: int = ...) -> Optional[float]: ...
def team_spin_ns(barrier: Optional[int] = ..., job: Optional[int] = ...) -> tuple[int, int]: ...
def team_sleeps() -> tuple[int, int]: ...
def _team_late_barrier(parts: int = ..., delay_s: float = ..., until_sleep: bool = ...) -> int: ...
def panels_supported() -> bool: ...

class Engine:
    dtype: np.dtype
    training: bool
    grad_sq_norm: float
    loss_terms: float
    last_parts: int
    last_paths: frozenset[str]
    batch: int
    steps: int
    workspace_bytes: int
    chunk_steps: int
    panels: bool
    plan: dict[str, object]
    thread_choice: dict[str, object]
    def __init__(self, cell: str, num_layers: int, input_size: int, hidden_size: int,
                 output_size: int, batch: int, steps: int, dtype: object,
                 many_to_one: bool = ..., loss: str = ..., loss_start: int = ...,
                 training: bool = ..., *, chunk_steps: int = ..., ids: bool = ...,
                 dropout: float = ..., recurrent_dropout: float = ...) -> None: ...
    def set_dropout(self, key: int, row0: int = ..., stream0: int = ...,
                    step0: int = ...) -> None: ...
    def loss_and_grad(self, x: np.ndarray, target: np.ndarray, params: np.ndarray,
                      grads: np.ndarray, h0: Optional[np.ndarray] = ...,
                      dh0: Optional[np.ndarray] = ..., h_final: Optional[np.ndarray] = ...,
                      c0: Optional[np.ndarray] = ..., dc0: Optional[np.ndarray] = ...,
                      c_final: Optional[np.ndarray] = ..., weight: Optional[np.ndarray] = ...,
                      lengths: Optional[np.ndarray] = ...,
                      flow: Optional[np.ndarray] = ..., dh_final: Optional[np.ndarray] = ...,
                      dc_final: Optional[np.ndarray] = ..., dx: Optional[np.ndarray] = ...,
                      terms: Optional[float] = ...) -> float: ...
    def predict(self, x: np.ndarray, params: np.ndarray, out: np.ndarray,
                h0: Optional[np.ndarray] = ..., h_final: Optional[np.ndarray] = ...,
                c0: Optional[np.ndarray] = ..., c_final: Optional[np.ndarray] = ...,
                lengths: Optional[np.ndarray] = ...) -> None: ...
    def forward_states(self, x: np.ndarray, params: np.ndarray, h_final: np.ndarray,
                       c_final: Optional[np.ndarray] = ..., h0: Optional[np.ndarray] = ...,
                       c0: Optional[np.ndarray] = ...,
                       lengths: Optional[np.ndarray] = ...) -> None: ...
    def states(self) -> tuple[np.ndarray, Optional[np.ndarray]]: ...
