"""The encoder-decoder as each contender runs it, for the seq2seq rows (seq2seq_grid.py). Every
contender builds its model from the row's shared parameters outside the timed region; ``step()``
is one training step (returning the loss before the update) or, on a decoding row, one generate
call of B sequences (returning 0.0: its ids, ``output()``, are what the row compares).

- cbptt: ``Seq2Seq.step(X, Y_in, Y_out)`` and ``Seq2Seq.generate(X, start, steps, beam)``.
- torch: ``to_torch()`` of the same halves: ``nn.LSTM``/``nn.GRU`` encoder whose final state
  ((h, c) or h) starts the decoder, ``nn.Linear`` head, ``F.cross_entropy``, ``backward``,
  ``torch.optim.SGD``. Decoding under ``no_grad``: a Python loop of decoder calls on (rows, 1, J)
  with the state carried, the next input the one-hot of the chosen ids; beam search batched over
  B*k rows, ``topk`` over the k*O candidates of each sequence, the state rows gathered to follow
  their hypotheses.
- jax: encoder and decoder by ``lax.scan`` (the cells of contenders.Jax), the head, the mean
  cross-entropy, ``value_and_grad`` and the SGD update in one ``jax.jit`` function (parameters
  donated), compiled ahead of the warm-up and timed apart. Training rows only.
"""
import time

import numpy as np

from .contenders import CONTENDERS, Contender, GridJaxUser, Jax, Torch
from .grid import LR
from .seq2seq_grid import START, build_cbptt, build_halves


class Seq2SeqCbptt(Contender):
    name = "cbptt"

    def setup(self, case, problem):
        params, X, Y_in, Y_out = problem
        self.s2s = build_cbptt(case, params)
        self.X, self.Y_in, self.Y_out = X.copy(), Y_in.copy(), Y_out.copy()
        self.beam, self.steps = case.beam, case.shape.N
        self.ids = None

    def step(self):
        if not self.beam:
            return self.s2s.step(self.X, self.Y_in, self.Y_out)
        self.ids = self.s2s.generate(self.X, start=START, steps=self.steps, beam=self.beam)
        return 0.0

    def output(self):
        return self.ids

    def row_info(self):
        """The most threads any of cbptt's engines ran its last call on (Engine.last_parts)."""
        return {"threads_used": max(engine.last_parts for engine in self.s2s._engines.values())}


class Seq2SeqTorch(Contender):
    name = "torch"
    persistent = ("torch",)

    available = Torch.available
    set_threads = Torch.set_threads

    def setup(self, case, problem):
        torch = self.torch
        params, X, Y_in, Y_out = problem
        encoder, decoder = build_halves(case, params)
        self.encoder, _ = encoder.to_torch()
        self.decoder, self.head = decoder.to_torch()
        parameters = [p for m in (self.encoder, self.decoder, self.head) for p in m.parameters()]
        self.opt = torch.optim.SGD(parameters, lr=LR)
        self.X, self.Y_in = torch.from_numpy(X.copy()), torch.from_numpy(Y_in.copy())
        self.Y_out = torch.from_numpy(Y_out.copy())
        self.beam, self.steps = case.beam, case.shape.N
        s = case.shape
        self.x = torch.zeros((s.B * max(self.beam, 1), 1, s.J), dtype=self.X.dtype)   # decoding input
        self.ids = None

    def step(self):
        if not self.beam:
            return self._train()
        with self.torch.no_grad():
            self.ids = (self._greedy() if self.beam == 1 else self._beam_search()).numpy()
        return 0.0

    def output(self):
        return self.ids

    def _train(self):
        _, state = self.encoder(self.X)
        out, _ = self.decoder(self.Y_in, state)
        logits = self.head(out)
        loss = self.torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                      self.Y_out.reshape(-1))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()

    def _feed(self, ids):
        """The next input: the one-hot (rows, 1, J) of ids (rows,)."""
        self.x.zero_()
        self.x[:, 0].scatter_(1, ids[:, None], 1.0)

    def _greedy(self):
        torch = self.torch
        _, state = self.encoder(self.X)
        batch = self.X.shape[0]
        ids = torch.empty((batch, self.steps), dtype=torch.int64)
        self._feed(torch.full((batch,), START, dtype=torch.int64))
        for n in range(self.steps):
            out, state = self.decoder(self.x, state)
            chosen = self.head(out[:, 0]).argmax(dim=1)
            ids[:, n] = chosen
            self._feed(chosen)
        return ids

    def _beam_search(self):
        """k hypotheses per sequence (rows b*k .. b*k + k - 1) by total log-probability; at the
        start only the first is live. Returns the best hypothesis of each sequence (B, N)."""
        torch = self.torch
        k, batch = self.beam, self.X.shape[0]
        _, state = self.encoder(self.X)
        state = (tuple(s.repeat_interleave(k, dim=1) for s in state) if isinstance(state, tuple)
                 else state.repeat_interleave(k, dim=1))
        scores = torch.full((batch, k), -float("inf"))
        scores[:, 0] = 0.0
        history = torch.zeros((batch, k, self.steps), dtype=torch.int64)
        first_row = (torch.arange(batch) * k)[:, None]
        self._feed(torch.full((batch * k,), START, dtype=torch.int64))
        for n in range(self.steps):
            out, state = self.decoder(self.x, state)
            logp = torch.log_softmax(self.head(out[:, 0]), dim=-1)
            count = logp.shape[-1]
            candidates = (scores[:, :, None] + logp.view(batch, k, count)).view(batch, k * count)
            scores, best = candidates.topk(k, dim=1)
            source, chosen = best // count, best % count
            rows = (first_row + source).view(-1)
            state = (tuple(s[:, rows] for s in state) if isinstance(state, tuple)
                     else state[:, rows])
            history = history.gather(1, source[:, :, None].expand(-1, -1, self.steps))
            history[:, :, n] = chosen
            self._feed(chosen.view(-1))
        return history[torch.arange(batch), scores.argmax(dim=1)]


class Seq2SeqJax(GridJaxUser):
    """Training rows only (decoding: n/a), in JAX (GridJaxUser: XLA's pool is the grid's)."""

    def supports(self, case):
        if case.beam:
            return False
        return self.threads_refused() or True

    def _loss_fn(self, cell):
        g = self.grid_jax
        jnp, lax, jax = g.jnp, g.lax, g.jax

        def run(p, inputs, carry):
            xp = jnp.swapaxes(inputs, 0, 1) @ p["weight_ih_l0"].T + p["bias_ih_l0"]   # hoisted
            return lax.scan(g.cell_step(cell, p["weight_hh_l0"].T, p["bias_hh_l0"]), carry, xp)

        def loss(p, X, Y_in, Y_out):
            enc, dec = p["encoder"], p["decoder"]
            h0 = jnp.zeros((X.shape[0], enc["weight_hh_l0"].shape[1]), X.dtype)
            last, _ = run(enc, X, (h0, h0) if cell == "lstm" else h0)
            _, hs = run(dec, Y_in, last)
            logits = jnp.swapaxes(hs, 0, 1) @ dec["head.weight"].T + dec["head.bias"]
            logp = jax.nn.log_softmax(logits, axis=-1)
            return -jnp.mean(jnp.take_along_axis(logp, Y_out[..., None], axis=-1))
        return loss

    def setup(self, case, problem):
        g = self.grid_jax
        jax, jnp = g.jax, g.jnp
        params, X, Y_in, Y_out = problem
        if np.dtype(case.dtype) == np.float64:
            jax.config.update("jax_enable_x64", True)
        loss = self._loss_fn(case.cell)

        def train_step(p, X, Y_in, Y_out):
            value, grads = jax.value_and_grad(loss)(p, X, Y_in, Y_out)
            return jax.tree_util.tree_map(lambda a, d: a - LR * d, p, grads), value

        self.params = {half: {k: jnp.asarray(v.copy()) for k, v in state.items()}
                       for half, state in params.items()}
        self.data = tuple(jnp.asarray(a.copy()) for a in (X, Y_in, Y_out))
        t0 = time.perf_counter()
        self.compiled = jax.jit(train_step, donate_argnums=0).lower(self.params, *self.data).compile()
        self.compile_ms = (time.perf_counter() - t0) * 1e3
        assert all(a.dtype == case.dtype for a in jax.tree_util.tree_leaves((self.params, self.data[:2])))

    def row_info(self):
        g = self.grid_jax
        return {"compile_ms": self.compile_ms, "thread_setting": g.setting, "version": g.jax.__version__}

    def step(self):
        self.params, loss = self.compiled(self.params, *self.data)
        self.grid_jax.jax.block_until_ready(self.params)
        return float(loss)


def _grid_jax():
    return next(c for c in CONTENDERS if isinstance(c, Jax))


SEQ2SEQ_CONTENDERS = [Seq2SeqCbptt(), Seq2SeqTorch(), Seq2SeqJax(_grid_jax())]   # cbptt first: the baseline
