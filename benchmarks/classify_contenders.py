"""The rows of issue 19 (classify_grid.py) as each contender runs them. Every contender builds its
model from the row's shared parameters outside the timed region; ``step()`` is one training step
returning the loss before the update; ``gradients()`` (untimed, for the tests) is the loss's
gradient at the current parameters by state_dict key.

- cbptt: ``ManyToOne``/``ManyToMany`` of the row's model, ``trainer.step(X, Y)``; on the ids rows
  X is token ids (B, T).
- one-hot (ids rows only): the same cbptt trainer on the one-hot float input (B, T, V).
- torch: ``to_torch()`` of the same model. Bidirectional: ``nn.RNN/LSTM/GRU(bidirectional=True,
  batch_first=True)``, the head on ``cat(h_n[-2], h_n[-1])``, ``mse_loss``. Embedding:
  ``nn.Embedding`` (dense gradient), the rnn, the head on every step, ``cross_entropy``. Then
  ``backward`` and ``torch.optim.SGD``. ids rows: n/a.
- jax: a forward ``lax.scan`` and a reverse one (``reverse=True``) over the hoisted input
  projections, or the table's rows picked by id (``table[X]``) before one scan; the head, the loss,
  ``value_and_grad`` and the SGD update in one ``jax.jit`` function (parameters donated),
  compiled ahead of the warm-up. ids rows: n/a.
"""
import time

import numpy as np

from .classify_grid import build_cbptt, one_hot
from .contenders import CONTENDERS, Contender, GridJaxUser, Jax, Torch
from .grid import LR


class ClassifyCbptt(Contender):
    name = "cbptt"

    def inputs(self, case, X):
        return X

    def setup(self, case, problem):
        params, X, Y = problem
        self.model, self.trainer = build_cbptt(case, params)
        self.X, self.Y = self.inputs(case, X.copy()), Y.copy()

    def step(self):
        return self.trainer.step(self.X, self.Y)

    def gradients(self):
        _, grads = self.trainer.loss_and_grad(self.X, self.Y)
        return {k: v for k, v in grads.items() if k not in ("h0", "c0")}

    def row_info(self):
        """The most threads cbptt's last call ran on: an engine's team (Engine.last_parts), or, for a
        bidirectional trainer's runner (a one-layer engine per layer and direction), 2 when it ran a
        layer's two directions at once, one thread each (bidirectional.py)."""
        used = []
        for value in self.trainer._engines.values():
            if hasattr(value, "engines"):
                used += [2 if getattr(value, "together", False) else 1]
                used += [e.last_parts for layer in value.engines for e in layer]
            else:
                used.append(value.last_parts)
        return {"threads_used": max(used)}


class ClassifyOneHot(ClassifyCbptt):
    """cbptt on the one-hot float input of the ids rows' token ids."""
    name = "one-hot"

    def supports(self, case):
        return case.kind == "ids"

    def inputs(self, case, X):
        return one_hot(X, case)


class ClassifyTorch(Contender):
    name = "torch"
    persistent = ("torch",)

    available = Torch.available
    set_threads = Torch.set_threads

    def supports(self, case):
        return case.kind in ("bidirectional", "embedding")

    def setup(self, case, problem):
        torch = self.torch
        params, X, Y = problem
        model, _ = build_cbptt(case, params)
        modules = model.to_torch()
        self.rnn, self.head = modules[:2]
        self.table = modules[2] if len(modules) > 2 else None
        self.modules = {"": self.rnn, "head.": self.head, "embedding.": self.table}
        self.opt = torch.optim.SGD([p for m in modules for p in m.parameters()], lr=LR)
        self.X, self.Y = torch.from_numpy(X.copy()), torch.from_numpy(Y.copy())
        self.kind = case.kind

    def _loss(self):
        F = self.torch.nn.functional
        if self.kind == "bidirectional":
            _, state = self.rnn(self.X)
            h = state[0] if isinstance(state, tuple) else state
            return F.mse_loss(self.head(self.torch.cat((h[-2], h[-1]), dim=1)), self.Y)
        out, _ = self.rnn(self.table(self.X))
        logits = self.head(out)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.Y.reshape(-1))

    def step(self):
        loss = self._loss()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()

    def gradients(self):
        self.opt.zero_grad()
        self._loss().backward()
        return {prefix + name: p.grad.numpy().copy() for prefix, m in self.modules.items() if m is not None
                for name, p in m.named_parameters()}


class ClassifyJax(GridJaxUser):
    """The bidirectional and embedding rows in JAX (GridJaxUser: XLA's pool is the grid's)."""

    def supports(self, case):
        if case.kind not in ("bidirectional", "embedding"):
            return False
        return self.threads_refused() or True

    def _loss_fn(self, cell, kind):
        g = self.grid_jax
        jnp, lax, jax = g.jnp, g.lax, g.jax

        def scan(p, suffix, inputs, reverse=False):
            """(final carry, outputs (T, B, H)) of one direction over inputs (B, T, I)."""
            xp = jnp.swapaxes(inputs, 0, 1) @ p["weight_ih_l0" + suffix].T + p["bias_ih_l0" + suffix]
            h0 = jnp.zeros((inputs.shape[0], p["weight_hh_l0" + suffix].shape[1]), inputs.dtype)
            step = g.cell_step(cell, p["weight_hh_l0" + suffix].T, p["bias_hh_l0" + suffix])
            return lax.scan(step, (h0, h0) if cell == "lstm" else h0, xp, reverse=reverse)

        def last_h(carry):
            return carry[0] if cell == "lstm" else carry

        def loss(p, X, Y):
            if kind == "bidirectional":
                forward, _ = scan(p, "", X)
                backward, _ = scan(p, "_reverse", X, reverse=True)     # its carry ends after step 0
                final = jnp.concatenate([last_h(forward), last_h(backward)], axis=1)
                return jnp.mean((final @ p["head.weight"].T + p["head.bias"] - Y) ** 2)
            _, hs = scan(p, "", p["embedding.weight"][X])
            logits = jnp.swapaxes(hs, 0, 1) @ p["head.weight"].T + p["head.bias"]
            logp = jax.nn.log_softmax(logits, axis=-1)
            return -jnp.mean(jnp.take_along_axis(logp, Y[..., None], axis=-1))
        return loss

    def setup(self, case, problem):
        g = self.grid_jax
        jax, jnp = g.jax, g.jnp
        params, X, Y = problem
        if np.dtype(case.dtype) == np.float64:
            jax.config.update("jax_enable_x64", True)
        self.loss = self._loss_fn(case.cell, case.kind)

        def train_step(p, X, Y):
            value, grads = jax.value_and_grad(self.loss)(p, X, Y)
            return jax.tree_util.tree_map(lambda a, d: a - LR * d, p, grads), value

        self.params = {k: jnp.asarray(v.copy()) for k, v in params.items()}
        # ids as int32, jax's integers unless x64 is on (V and O are far below 2**31)
        self.X, self.Y = (jnp.asarray(a.astype(np.int32) if a.dtype.kind == "i" else a.copy()) for a in (X, Y))
        t0 = time.perf_counter()
        self.compiled = jax.jit(train_step, donate_argnums=0).lower(self.params, self.X, self.Y).compile()
        self.compile_ms = (time.perf_counter() - t0) * 1e3
        assert all(a.dtype == case.dtype for a in jax.tree_util.tree_leaves(self.params))

    def row_info(self):
        g = self.grid_jax
        return {"compile_ms": self.compile_ms, "thread_setting": g.setting, "version": g.jax.__version__}

    def step(self):
        self.params, loss = self.compiled(self.params, self.X, self.Y)
        self.grid_jax.jax.block_until_ready(self.params)
        return float(loss)

    def gradients(self):
        jax = self.grid_jax.jax
        grads = jax.jit(jax.grad(self.loss))(self.params, self.X, self.Y)     # jitted: 3x faster than not
        return {k: np.asarray(v) for k, v in grads.items()}


def _grid_jax():
    return next(c for c in CONTENDERS if isinstance(c, Jax))


# cbptt first: the baseline (on the ids rows, the token ids' time)
CLASSIFY_CONTENDERS = [ClassifyCbptt(), ClassifyOneHot(), ClassifyTorch(), ClassifyJax(_grid_jax())]
