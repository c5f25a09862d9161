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
        """True, False (n/a) or a string: n/a for the reason given (listed under the table)."""
        return True

    def row_info(self):
        """Extra figures of the row (after setup and warm-up) for the JSON and the table, e.g. compile time."""
        return {}

    def output(self):
        """What the last step produced, compared across contenders instead of the losses when not
        None (a decoding row's ids)."""
        return None

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



class GridJaxUser(Contender):
    """A JAX contender of another table: XLA's thread pool is set once per process, by the
    step grid's Jax contender (``grid_jax``), which it asks."""
    name = "jax"
    persistent = ("grid_jax",)

    def __init__(self, grid_jax):
        self.grid_jax = grid_jax

    def available(self):
        return self.grid_jax.available()

    def set_threads(self, n):
        self.grid_jax.set_threads(n)

    def threads_refused(self):
        """Why this row's thread count cannot run (XLA's pool already sized), or None."""
        if self.grid_jax.setting_threads not in (None, self.grid_jax.threads):
            return (f"XLA's threads are fixed at import ({self.grid_jax.setting_threads}); use a "
                    f"separate run")
        return None

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

    def row_info(self):
        """How many threads cbptt's engines ran the warm-up's last step on (its own team: 1 when
        the shape is too small to share, or at 1 BLAS thread)."""
        return {"threads_used": max(engine.last_parts for engine in self.trainer._engines.values())}


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
    """The same step in JAX: the torch-convention cell (tanh; LSTM gates i, f, g, o; GRU r, z, n with
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))) run by ``lax.scan`` over time after one hoisted input
    projection, the linear head, the suite's MSE loss (mean over all elements), ``jax.value_and_grad`` and the
    SGD update ``p - lr * g``, all in one ``jax.jit`` function (parameters donated, so updated in place). Starts
    from the same state dict as cbptt. Full-sequence trainers only (truncated: n/a).

    Compilation happens in setup(), ahead of time (``jit(...).lower(...).compile()``), and is timed there: the
    row reports it apart (``compile_ms``), the warm-up and timed steps run the compiled executable only.

    Threads: XLA's CPU thread pool is fixed when jax is first imported, through XLA_FLAGS. jax is imported at
    the first set_threads(n): n == 1 sets ``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``
    (which, measured with jax 0.10.2 here, does not by itself keep XLA on one thread: the suite pins the
    whole process to one CPU for 1-thread rows, facts.cores), any other n keeps XLA's default (a pool over all cores: os.cpu_count()). Rows of a later thread count that
    needs another setting are n/a with the reason listed (run --threads 1 and --threads 2 as separate runs to
    get JAX at both). An XLA_FLAGS already set by the user is kept as is and reported."""
    name = "jax"
    persistent = ("jax", "jnp", "lax", "setting", "setting_threads", "threads")
    SINGLE = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

    def available(self):
        import importlib.util
        if importlib.util.find_spec("jax") is None:
            return False, "jax not installed"
        return True, ""          # imported in set_threads(), once the thread count is known

    def _import(self, n):
        import os
        user = os.environ.get("XLA_FLAGS")
        if user is not None:
            self.setting, self.setting_threads = f"user XLA_FLAGS={user!r}", None
        elif n == 1:
            os.environ["XLA_FLAGS"] = self.SINGLE
            self.setting, self.setting_threads = (
                f"XLA_FLAGS={self.SINGLE!r} (with jax 0.10.2 it does not limit XLA's pool by itself; the "
                f"process's pinning to one CPU in 1-thread rows does)", 1)
        else:
            self.setting = f"XLA default, a pool over all {os.cpu_count()} cores"
            self.setting_threads = os.cpu_count()
        import jax
        import jax.numpy as jnp
        from jax import lax
        self.jax, self.jnp, self.lax = jax, jnp, lax

    def set_threads(self, n):
        if not hasattr(self, "jax"):
            self._import(n)
        self.threads = n

    def supports(self, case):
        if case.trainer not in ("many-to-many", "many-to-one"):
            return False
        if self.setting_threads is not None and self.setting_threads != self.threads:
            return f"XLA's threads are fixed at import ({self.setting_threads}); use a separate run"
        return True

    def cell_step(self, cell, Whh_T, bhh):
        """The torch-convention step of ``cell`` for lax.scan: (carry, x) -> (carry, h), x the hoisted
        input projection of one step (B, G*H); carry h, or (h, c) for lstm."""
        jnp, jax = self.jnp, self.jax
        sig = jax.nn.sigmoid
        if cell == "tanh":
            def step(h, x):
                h = jnp.tanh(x + h @ Whh_T + bhh)
                return h, h
        elif cell == "lstm":
            def step(hc, x):
                h, c = hc
                i, f, g, o = jnp.split(x + h @ Whh_T + bhh, 4, axis=-1)
                c = sig(f) * c + sig(i) * jnp.tanh(g)
                h = sig(o) * jnp.tanh(c)
                return (h, c), h
        elif cell == "gru":
            def step(h, x):
                xr, xz, xn = jnp.split(x, 3, axis=-1)
                hr, hz, hn = jnp.split(h @ Whh_T + bhh, 3, axis=-1)
                r, z = sig(xr + hr), sig(xz + hz)
                n = jnp.tanh(xn + r * hn)
                h = (1 - z) * n + z * h
                return h, h
        else:
            raise ValueError(f"no JAX cell {cell!r}")
        return step

    def _loss_fn(self, cell, many_to_one):
        jnp, lax = self.jnp, self.lax

        def loss(p, X, Y):
            B, H = X.shape[0], p["weight_hh_l0"].shape[1]
            xp = jnp.swapaxes(X, 0, 1) @ p["weight_ih_l0"].T + p["bias_ih_l0"]      # (T, B, G*H), hoisted
            h0 = jnp.zeros((B, H), X.dtype)
            carry = (h0, h0) if cell == "lstm" else h0
            last, hs = lax.scan(self.cell_step(cell, p["weight_hh_l0"].T, p["bias_hh_l0"]), carry, xp)
            if many_to_one:
                pred = (last[0] if cell == "lstm" else last) @ p["head.weight"].T + p["head.bias"]
            else:
                pred = jnp.swapaxes(hs, 0, 1) @ p["head.weight"].T + p["head.bias"]
            return jnp.mean((pred - Y) ** 2)
        return loss

    def setup(self, case, problem):
        import time
        jax, jnp = self.jax, self.jnp
        params, X, Y = problem
        if np.dtype(case.dtype) == np.float64:
            jax.config.update("jax_enable_x64", True)
        loss = self._loss_fn(case.cell, case.trainer == "many-to-one")

        def train_step(p, X, Y):
            value, grads = jax.value_and_grad(loss)(p, X, Y)
            return jax.tree_util.tree_map(lambda a, g: a - LR * g, p, grads), value

        self.params = {k: jnp.asarray(v.copy()) for k, v in params.items()}
        self.X, self.Y = jnp.asarray(X.copy()), jnp.asarray(Y.copy())
        t0 = time.perf_counter()
        self.compiled = jax.jit(train_step, donate_argnums=0).lower(self.params, self.X, self.Y).compile()
        self.compile_ms = (time.perf_counter() - t0) * 1e3
        assert all(a.dtype == case.dtype for a in jax.tree_util.tree_leaves((self.params, self.X, self.Y)))

    def row_info(self):
        return {"compile_ms": self.compile_ms, "thread_setting": self.setting, "version": self.jax.__version__}

    def step(self):
        self.params, loss = self.compiled(self.params, self.X, self.Y)
        self.jax.block_until_ready(self.params)
        return float(loss)


CONTENDERS = [Cbptt(), Reference(), Torch(), Jax()]   # the first is the baseline: ratios are other / baseline


def same_outputs(base, other):
    """A decoding row's ids against cbptt's: the fraction that differ (tolerance 0), ok."""
    if base.shape != other.shape:
        return {"max_rel_diff": 1.0, "tol": 0.0, "ok": False, "what": f"shapes {base.shape} and {other.shape}"}
    differ = float(np.mean(base != other))
    return {"max_rel_diff": differ, "tol": 0.0, "ok": differ == 0.0, "what": "ids"}


def same_losses(base, other, dtype):
    """Warm-up losses of a peer against cbptt's: max relative difference, tolerance, ok."""
    tol = 1e-4 if np.dtype(dtype) == np.float32 else 1e-9
    rel = max(abs(a - b) / max(abs(a), 1e-30) for a, b in zip(base, other))
    return {"max_rel_diff": rel, "tol": tol, "ok": rel <= tol}
