"""The implementations being timed. Each builds its model outside the timed region from the row's shared
starting point, and ``step()`` is one full training step returning the loss before the update.

To add one: subclass Contender and append an instance to CONTENDERS (see benchmarks/README.md)."""
import sys
from pathlib import Path

import numpy as np

from .grid import LOSS, LR, NUM_LAYERS, TRUNCATED_K, build_cbptt

TESTS = Path(__file__).resolve().parent.parent / "tests"


class Contender:
    name = "?"
    min_repeats = None      # None: always time --repeats steps; else may go down to this many when slow
    persistent = ()         # attributes that outlive a row (an imported module), kept by teardown()

    def available(self):
        """(True, "") or (False, why not): a missing optional peer is reported and skipped, not fatal."""
        return True, ""

    def supports(self, case):
        return True

    def set_threads(self, n):
        """Called with the thread count of each group of rows. BLAS libraries are limited by the driver
        (threadpoolctl); a contender with its own thread pool sets it here."""

    def setup(self, case, problem):
        raise NotImplementedError

    def step(self):
        raise NotImplementedError

    def teardown(self):
        """Drop the row's model and data (so rows do not pile up in memory)."""
        for attr in list(vars(self)):
            if attr not in self.persistent:
                delattr(self, attr)


class Cbptt(Contender):
    """cbptt's own trainer: ``trainer.step(X, Y)``, input checks, gradient-norm check and SGD included."""
    name = "cbptt"

    def setup(self, case, problem):
        params, X, Y = problem
        self.model, self.trainer = build_cbptt(case, params)
        self.X, self.Y = X.copy(), Y.copy()

    def step(self):
        return self.trainer.step(self.X, self.Y)

    def workspace_bytes(self):
        return sum(engine.workspace_bytes for engine in self.trainer._engines.values())


class Reference(Contender):
    """tests/reference.loss_and_grad (textbook BPTT: a Python loop over steps, small GEMMs) plus SGD in NumPy.
    Full-sequence modes only: it has no truncated trainer."""
    name = "reference"
    min_repeats = 5
    persistent = ("reference",)

    def available(self):
        if str(TESTS) not in sys.path:
            sys.path.insert(0, str(TESTS))
        try:
            import reference
        except ImportError as exc:
            return False, f"tests/reference.py not importable ({exc})"
        self.reference = reference
        return True, ""

    def supports(self, case):
        return case.trainer in ("many-to-many", "many-to-one")

    def setup(self, case, problem):
        params, X, Y = problem
        self.params = {k: v.copy() for k, v in params.items()}
        self.X, self.Y = X.copy(), Y.copy()
        self.kw = dict(cell=case.cell, num_layers=NUM_LAYERS, mode=case.trainer.replace("-", "_"), loss=LOSS)

    def step(self):
        loss, grads = self.reference.loss_and_grad(self.params, self.X, self.Y, **self.kw)
        for k, p in self.params.items():            # SGD, no momentum: p <- p - lr * g
            p -= LR * grads[k]
        return loss



class Torch(Contender):
    """torch.nn.RNN/LSTM/GRU(batch_first=True) + nn.Linear from ``model.to_torch()`` of the same cbptt model,
    MSE loss, backward, torch.optim.SGD. Truncated: windows of k steps, the state detached between them
    (k1 = k2), one update per window, the stream continuing across calls as cbptt's does.

    ``keep_grads`` (memory mode): the .grad tensors exist before the step and are zeroed in place, as cbptt's
    gradient buffer exists from the trainer's construction."""
    name = "torch"
    keep_grads = False
    persistent = ("torch", "keep_grads")

    def available(self):
        try:
            import torch
        except ImportError as exc:
            return False, f"torch not importable ({exc})"
        self.torch = torch
        return True, ""

    def set_threads(self, n):
        self.torch.set_num_threads(n)

    def setup(self, case, problem):
        torch = self.torch
        params, X, Y = problem
        model, _ = build_cbptt(case, params)
        self.rnn, self.head = model.to_torch()
        parameters = list(self.rnn.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.SGD(parameters, lr=LR)
        if self.keep_grads:
            for p in parameters:
                p.grad = torch.zeros_like(p)
        self.X, self.Y = torch.from_numpy(X.copy()), torch.from_numpy(Y.copy())
        self.trainer = case.trainer
        self.state = None

    def _update(self, x, y, state=None):
        out, state = self.rnn(x, state)
        pred = self.head(out[:, -1] if self.trainer == "many-to-one" else out)
        loss = self.torch.nn.functional.mse_loss(pred, y)
        self.opt.zero_grad(set_to_none=not self.keep_grads)
        loss.backward()
        self.opt.step()
        return loss.item(), state

    def step(self):
        if self.trainer != "truncated":
            return self._update(self.X, self.Y)[0]
        T = self.X.shape[1]
        total = 0.0
        for s in range(0, T, TRUNCATED_K):
            e = min(s + TRUNCATED_K, T)
            loss, state = self._update(self.X[:, s:e], self.Y[:, s:e], self.state)
            self.state = tuple(x.detach() for x in state) if isinstance(state, tuple) else state.detach()
            total += loss * (e - s)
        return total / T      # cbptt.Truncated.step: the mean over the call's outputs



class Jax(Contender):
    """Placeholder: reported as skipped. No JAX implementation is written (jax is not installed here, and an
    untested contender would be worse than none); see benchmarks/README.md."""
    name = "jax"

    def available(self):
        try:
            import jax  # noqa: F401
        except ImportError:
            return False, "jax not installed"
        return False, "jax is installed, but no JAX contender is written yet"


CONTENDERS = [Cbptt(), Reference(), Torch(), Jax()]   # the first is the baseline: ratios are other / baseline


def same_losses(base, other, dtype):
    """Warm-up losses of a peer against cbptt's: max relative difference, tolerance, ok."""
    tol = 1e-4 if np.dtype(dtype) == np.float32 else 1e-9
    rel = max(abs(a - b) / max(abs(a), 1e-30) for a, b in zip(base, other))
    return {"max_rel_diff": rel, "tol": tol, "ok": rel <= tol}
