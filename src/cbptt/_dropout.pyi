"""Type stubs for dropout's masks seen from Python."""
import numpy as np

def dropout_mask(key: int, layer: int, p: float, batch: int, units: int, steps: int = ...,
                 row0: int = ..., stream0: int = ..., dtype: object = ...,
                 step0: int = ...) -> np.ndarray: ...
def dropout_key(seed: int, call: int) -> int: ...
