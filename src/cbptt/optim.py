"""Optimisers with PyTorch's update rules, acting in place on a model's flat parameter buffer.

An optimiser's state (momentum buffers, Adam's moments) is flat too, shaped like the buffer it
first steps; it is bound to that buffer and refuses another of a different size.
"""
import numpy as np


class Optimizer:
    """Base class: ``step(params, grads)`` updates params in place from grads (grads may be
    overwritten as scratch)."""

    def __init__(self, lr):
        if not lr > 0 or not np.isfinite(lr):
            raise ValueError(f"lr must be a positive number, got {lr}")
        self.lr = float(lr)
        self.steps = 0
        self._size = None

    def _bind(self, params):
        if self._size is None:
            self._size = params.size
            self._scratch = None
            self._init_state(params)
        elif params.size != self._size:
            raise ValueError(f"this optimiser holds state for {self._size} parameters, got "
                             f"{params.size}; use one optimiser per model")

    def _init_state(self, params):
        pass

    def _work(self, params):
        """A scratch array shaped like params, made on the first update that needs one: every
        update then works in place, with no allocation (plain SGD needs none: it scales the
        gradient buffer itself)."""
        if self._scratch is None:
            self._scratch = np.zeros_like(params)
        return self._scratch

    def reset(self):
        """Forget all state (moments, step count)."""
        self.steps = 0
        self._size = None

    state_names = ()        # the state arrays a subclass keeps, shaped like the parameters

    @property
    def parameter_copies(self):
        """How many arrays the size of the parameters this optimiser allocates at its first
        step (its state and its scratch array)."""
        return len(self.state_names) + self._needs_scratch()

    def _needs_scratch(self):
        return False

    def state_dict(self):
        """The optimiser's state as copies: {"steps": int64 array, name: array, ...} with
        the state arrays that exist yet (none before the first step)."""
        state = {"steps": np.array(self.steps, np.int64)}
        for name in self.state_names:
            value = getattr(self, name, None)
            if value is not None:
                state[name] = value.copy()
        return state

    def load_state_dict(self, state, params):
        """Restore ``state_dict()`` output for the flat parameter buffer params, so that the
        next step is the one the saved optimiser would have taken. Shapes are checked first;
        on an error nothing changes."""
        unknown = [name for name in state if name != "steps" and name not in self.state_names]
        if unknown or "steps" not in state:
            raise ValueError(f"optimizer state: expected 'steps' and {list(self.state_names)}, "
                             f"got {sorted(state)}")
        for name in self.state_names:
            if name in state and np.shape(state[name]) != params.shape:
                raise ValueError(f"optimizer state {name!r} has shape {np.shape(state[name])}, "
                                 f"the parameters have {params.shape}")
        steps = int(state["steps"])
        self.reset()
        if steps or len(state) > 1:
            self._bind(params)
            for name in self.state_names:
                if name in state:
                    getattr(self, name)[...] = state[name]
        self.steps = steps

    def step(self, params, grads):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent as torch.optim.SGD.

    g += weight_decay * p; with momentum mu: buf = g on the first step, later
    buf = mu * buf + (1 - dampening) * g; the update is p -= lr * buf, or
    p -= lr * (g + mu * buf) with Nesterov.
    """

    def __init__(self, lr=0.01, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr)
        for name, value in (("momentum", momentum), ("dampening", dampening),
                            ("weight_decay", weight_decay)):
            if not (value >= 0 and np.isfinite(value)):     # also refuses NaN
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening == 0")
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)
        self.buffer = None
        self.state_names = ("buffer",) if self.momentum else ()

    def _init_state(self, params):
        self.buffer = np.zeros_like(params) if self.momentum else None

    def _needs_scratch(self):
        return bool(self.weight_decay or self.nesterov)

    def reset(self):
        super().reset()
        self.buffer = None

    def step(self, params, grads):
        self._bind(params)
        if self.weight_decay:
            grads += np.multiply(params, self.weight_decay, out=self._work(params))
        if self.momentum:
            if self.steps == 0:
                self.buffer[...] = grads
            else:
                self.buffer *= self.momentum
                if self.dampening:
                    grads *= 1 - self.dampening
                self.buffer += grads
            if self.nesterov:
                grads += np.multiply(self.buffer, self.momentum, out=self._work(params))
            else:
                grads[...] = self.buffer
        grads *= self.lr
        params -= grads
        self.steps += 1


class Adam(Optimizer):
    """Adam as torch.optim.Adam: bias-corrected moments, eps added after the square root,
    weight_decay added to the gradient (L2, not AdamW)."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr)
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError) as exc:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from exc
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        for name, value in (("eps", eps), ("weight_decay", weight_decay)):
            if not (value >= 0 and np.isfinite(value)):     # also refuses NaN
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        self.betas = (float(beta1), float(beta2))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.exp_avg = self.exp_avg_sq = self._scratch = None
        self.state_names = ("exp_avg", "exp_avg_sq")

    def _init_state(self, params):
        self.exp_avg = np.zeros_like(params)
        self.exp_avg_sq = np.zeros_like(params)

    def _needs_scratch(self):
        return True

    def reset(self):
        super().reset()
        self.exp_avg = self.exp_avg_sq = self._scratch = None

    def step(self, params, grads):
        self._bind(params)
        beta1, beta2 = self.betas
        self.steps += 1
        m, v, tmp = self.exp_avg, self.exp_avg_sq, self._work(params)
        if self.weight_decay:
            grads += np.multiply(params, self.weight_decay, out=tmp)
        m *= beta1
        m += np.multiply(grads, 1 - beta1, out=tmp)
        v *= beta2
        np.multiply(grads, grads, out=tmp)
        tmp *= 1 - beta2
        v += tmp
        bias1 = 1 - beta1 ** self.steps
        bias2_sqrt = np.sqrt(1 - beta2 ** self.steps)
        np.sqrt(v, out=tmp)
        tmp /= bias2_sqrt
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= self.lr / bias1
        params -= tmp
