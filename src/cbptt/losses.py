"""The losses and their reductions (the kernels are in _core/losses.pxd).

- ``"mse"``: the mean over every output element of (y_hat - y)^2, as ``torch.nn.MSELoss()``.
  Targets are floats shaped like the outputs.
- ``"cross_entropy"``: the mean over targets of -log softmax(y_hat)[target], as
  ``torch.nn.CrossEntropyLoss()``. Targets are integer class ids, one per output row.
"""
from . import _checks
from .names import LOSSES


def check_loss(loss):
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return loss


def check_targets(loss, Y, name, output_shape, output_size, dtype):
    """Targets for output_shape (..., O): floats of that shape for mse, class ids of shape
    output_shape[:-1] for cross_entropy."""
    if loss == "mse":
        return _checks.float_array(Y, name, dtype, output_shape)
    return _checks.class_ids(Y, name, output_shape[:-1], output_size)
