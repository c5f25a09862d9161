"""Tools to inspect BPTT: a public finite-difference gradient check."""
import numpy as np

from .model import RNN
from .trainers import ManyToMany, ManyToOne


def gradcheck(trainer, X, Y, eps=1e-6, **kwargs):
    """Compare the trainer's gradients with central finite differences of its loss.

    trainer: a ManyToMany or ManyToOne trainer; X, Y and keyword arguments (h0, c0, mask,
    lengths) as for its ``loss_and_grad``. The check runs in float64 on a copy of the model
    (a float32 model is copied to float64), so the trainer and its model are left untouched.

    Returns {parameter name: worst relative error}, the error of a parameter being
    max |analytic - numeric| / max(max |numeric|, max |analytic|, 1e-12) over its entries.
    Values near 1e-7 or below mean the gradients are right; anything above 1e-4 is a bug
    (or a relu kink within eps of a pre-activation). An embedding's padding row is compared
    with zero, as it is never trained.
    """
    if not isinstance(trainer, (ManyToMany, ManyToOne)):
        raise TypeError(f"gradcheck takes a ManyToMany or ManyToOne trainer, got "
                        f"{type(trainer).__name__}")
    source = trainer.model
    model = RNN(**dict(source.config(), dtype=np.float64))
    model.load_state_dict(source.state_dict())
    # with dropout, every call draws the masks of the trainer's next call
    checker = type(trainer)(model, loss=trainer.loss, seed=trainer.seed)

    def loss_and_grad():
        checker.dropout_calls = trainer.dropout_calls
        return checker.loss_and_grad(X, Y, **kwargs)

    _, grads = loss_and_grad()
    errors = {}
    for name, view in model.named_parameters():
        numeric = np.empty(view.shape)
        for index in np.ndindex(view.shape):
            original = view[index]
            view[index] = original + eps
            plus = loss_and_grad()[0]
            view[index] = original - eps
            minus = loss_and_grad()[0]
            view[index] = original
            numeric[index] = (plus - minus) / (2 * eps)
        if name == "embedding.weight" and model.padding_idx is not None:
            numeric[model.padding_idx] = 0    # as torch.nn.Embedding: the row is not trained
        analytic = grads[name]
        scale = max(np.abs(numeric).max(), np.abs(analytic).max(), 1e-12)
        errors[name] = float(np.abs(analytic - numeric).max() / scale)
    return errors
