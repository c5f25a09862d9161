"""Pure-NumPy reference for cbptt: forward pass and hand-written backpropagation through time.

Ground truth for the compiled engine. Written the way a textbook would write it: a plain Python loop over the
time steps, one small matrix product per step and per operand, gradients derived by hand (no autograd), nothing
hoisted or fused. It is slow on purpose and only meant for tiny shapes.

Conventions are PyTorch's (docs/MATHS.md derives every formula used here):
    batch-first data X (B, T, I); weights stored as torch.nn.RNN/LSTM/GRU state_dict keys, W_ih (G*H, I or H),
    W_hh (G*H, H), so a product is ``x @ W.T``; gates stacked (i, f, g, o) for LSTM and (r, z, n) for GRU;
    a linear head ``y_t = h_t^top @ head.weight.T + head.bias`` reads the top layer.
Everything is computed in the dtype of the inputs.
"""
import numpy as np

CELLS = ("tanh", "relu", "lstm", "gru")
GATES = {"tanh": 1, "relu": 1, "lstm": 4, "gru": 3}
_LAYER_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


# ----------------------------------------------------------------------------------------------- numerics
def sigmoid(x):
    """Numerically stable logistic function: 1/(1+e^-x) for x >= 0, e^x/(1+e^x) for x < 0 (never overflows)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def log_softmax(y):
    """log softmax over the last axis, with the maximum subtracted first."""
    s = y - y.max(axis=-1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


# ----------------------------------------------------------------------------------------------- parameters
def init_params(cell, input_size, hidden_size, output_size, num_layers, rng, dtype=np.float64):
    """Random parameters, keyed exactly like torch's state_dict (plus 'head.weight', 'head.bias').

    weight_ih_l{k} (G*H, I if k == 0 else H), weight_hh_l{k} (G*H, H), bias_ih_l{k} (G*H,), bias_hh_l{k} (G*H,),
    head.weight (O, H), head.bias (O,); all uniform(-1/sqrt(H), 1/sqrt(H)) drawn from ``rng`` in that order.
    """
    _check_cell(cell)
    G, H = GATES[cell], hidden_size
    k = 1.0 / np.sqrt(H)

    def u(*shape):
        return rng.uniform(-k, k, size=shape).astype(dtype)

    p = {}
    for l in range(num_layers):
        p[f"weight_ih_l{l}"] = u(G * H, input_size if l == 0 else H)
        p[f"weight_hh_l{l}"] = u(G * H, H)
        p[f"bias_ih_l{l}"] = u(G * H)
        p[f"bias_hh_l{l}"] = u(G * H)
    p["head.weight"] = u(output_size, H)
    p["head.bias"] = u(output_size)
    return p


def _check_cell(cell):
    if cell not in GATES:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")


def _layer(params, l):
    """(W_ih, W_hh, b_ih, b_hh) of layer l."""
    return tuple(params[f"{name}_l{l}"] for name in _LAYER_KEYS)


# ----------------------------------------------------------------------------------------------- one time step
def _step(cell, params, l, x, h_prev, c_prev, rmask=None):
    """Forward one step of layer l.

    x (B, In), h_prev (B, H), c_prev (B, H) for lstm else None; rmask (B, H) or None: the
    recurrent dropout mask (scaled) on h_prev where it enters the recurrent product only.
    Returns h (B, H), c (B, H) or None, and the cache the backward step needs.
    """
    W_ih, W_hh, b_ih, b_hh = _layer(params, l)
    H = h_prev.shape[1]
    h_in = h_prev if rmask is None else h_prev * rmask
    gi = x @ W_ih.T + b_ih          # (B, G*H) input side
    gh = h_in @ W_hh.T + b_hh       # (B, G*H) recurrent side
    if cell in ("tanh", "relu"):
        a = gi + gh
        h = np.tanh(a) if cell == "tanh" else np.maximum(a, 0)
        return h, None, dict(x=x, h_prev=h_prev, h_in=h_in, rmask=rmask, a=a, h=h)
    if cell == "lstm":
        zz = gi + gh
        i = sigmoid(zz[:, 0 * H:1 * H])
        f = sigmoid(zz[:, 1 * H:2 * H])
        g = np.tanh(zz[:, 2 * H:3 * H])
        o = sigmoid(zz[:, 3 * H:4 * H])
        c = f * c_prev + i * g
        h = o * np.tanh(c)
        return h, c, dict(x=x, h_prev=h_prev, h_in=h_in, rmask=rmask, c_prev=c_prev, i=i, f=f,
                          g=g, o=o, c=c)
    # gru
    r = sigmoid(gi[:, 0 * H:1 * H] + gh[:, 0 * H:1 * H])
    z = sigmoid(gi[:, 1 * H:2 * H] + gh[:, 1 * H:2 * H])
    hn = gh[:, 2 * H:3 * H]                       # W_hn h + b_hn, kept apart: it is multiplied by r
    n = np.tanh(gi[:, 2 * H:3 * H] + r * hn)
    h = (1 - z) * n + z * h_prev
    return h, None, dict(x=x, h_prev=h_prev, h_in=h_in, rmask=rmask, r=r, z=z, n=n, hn=hn)


def _step_backward(cell, params, l, cache, dh, dc, grads):
    """Backward one step of layer l.

    dh (B, H): total gradient w.r.t. h_t (from the layer above / head and from step t+1);
    dc (B, H): gradient w.r.t. c_t coming from step t+1 (lstm only, else None).
    Accumulates the layer's weight and bias gradients into ``grads``.
    Returns dx (B, In) (gradient w.r.t. this step's input), dh_prev (B, H), dc_prev (B, H) or None.
    """
    W_ih, W_hh, _, _ = _layer(params, l)
    dc_prev = None
    dh_prev = 0
    if cell in ("tanh", "relu"):
        if cell == "tanh":
            da = dh * (1 - cache["h"] ** 2)
        else:
            da = dh * (cache["a"] > 0)
        da_i = da_h = da
    elif cell == "lstm":
        i, f, g, o, c, c_prev = (cache[k] for k in ("i", "f", "g", "o", "c", "c_prev"))
        tc = np.tanh(c)
        do = dh * tc
        dc = dc + dh * o * (1 - tc ** 2)
        di = dc * g
        dg = dc * i
        df = dc * c_prev
        dc_prev = dc * f
        dz = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g ** 2), do * o * (1 - o)], axis=1)
        da_i = da_h = dz
    else:  # gru
        r, z, n, hn, h_prev = (cache[k] for k in ("r", "z", "n", "hn", "h_prev"))
        dn = dh * (1 - z)
        dz = dh * (h_prev - n)
        dh_prev = dh * z
        dan = dn * (1 - n ** 2)
        dr = dan * hn
        dhn = dan * r
        dar = dr * r * (1 - r)
        daz = dz * z * (1 - z)
        da_i = np.concatenate([dar, daz, dan], axis=1)  # input-side pre-activation grads
        da_h = np.concatenate([dar, daz, dhn], axis=1)  # recurrent-side pre-activation grads
    grads[f"weight_ih_l{l}"] += da_i.T @ cache["x"]
    grads[f"bias_ih_l{l}"] += da_i.sum(axis=0)
    grads[f"weight_hh_l{l}"] += da_h.T @ cache["h_in"]
    grads[f"bias_hh_l{l}"] += da_h.sum(axis=0)
    dx = da_i @ W_ih
    through_product = da_h @ W_hh
    if cache["rmask"] is not None:
        through_product = through_product * cache["rmask"]
    dh_prev = dh_prev + through_product
    return dx, dh_prev, dc_prev


# ----------------------------------------------------------------------------------------------- forward
def forward(params, X, *, cell, num_layers, h0=None, c0=None, masks=None):
    """Forward pass over the whole sequence.

    X (B, T, I) batch-first; h0, c0 (num_layers, B, H) or None for zeros (c0 only for lstm).
    masks: dropout, scaled masks (or None): {"between": [None, (T, B, H) for each layer above
    the first], "recurrent": [(B, H) or None for each layer]}.
    Returns a dict with
        'y'      (B, T, O)  head outputs at every step,
        'h_last' (num_layers, B, H)  state after step T-1 of every layer,
        'c_last' (num_layers, B, H)  cell after step T-1 (lstm only),
        'h_top'  (B, T, H)  top layer's h_t,
        'caches' list over layers of lists over steps of per-step cache dicts.
    """
    _check_cell(cell)
    if c0 is not None and cell != "lstm":
        raise ValueError("c0 is only meaningful for cell='lstm'")
    B, T, _ = X.shape
    H = params["weight_hh_l0"].shape[1]
    if h0 is None:
        h0 = np.zeros((num_layers, B, H), dtype=X.dtype)
    if cell == "lstm" and c0 is None:
        c0 = np.zeros((num_layers, B, H), dtype=X.dtype)

    inputs = [X[:, t] for t in range(T)]     # this layer's x_t, each (B, In)
    caches, h_last, c_last = [], [], []
    between, recurrent = _masks(masks, num_layers)
    for l in range(num_layers):
        h = h0[l]
        c = c0[l] if cell == "lstm" else None
        if between[l] is not None:
            inputs = [x_t * between[l][t] for t, x_t in enumerate(inputs)]
        outputs, layer_caches = [], []
        for t in range(T):
            h, c, cache = _step(cell, params, l, inputs[t], h, c, recurrent[l])
            outputs.append(h)
            layer_caches.append(cache)
        caches.append(layer_caches)
        h_last.append(h)
        c_last.append(c)
        inputs = outputs                     # the next layer reads this layer's h_t

    W, b = params["head.weight"], params["head.bias"]
    y = np.stack([h_t @ W.T + b for h_t in inputs], axis=1)
    out = dict(y=y, h_last=np.stack(h_last), h_top=np.stack(inputs, axis=1), caches=caches)
    if cell == "lstm":
        out["c_last"] = np.stack(c_last)
    return out


def _masks(masks, num_layers):
    """(between, recurrent): a list each, one entry a layer (None: no mask)."""
    masks = masks or {}
    between = list(masks.get("between") or [None] * num_layers)
    recurrent = list(masks.get("recurrent") or [None] * num_layers)
    return between, recurrent


# ----------------------------------------------------------------------------------------------- loss
def _loss(ys, Ys, loss):
    """Loss on the selected outputs ys (..., O) and its gradient d loss / d ys (same shape).

    'mse': Ys has ys's shape, mean of squared errors over all elements (torch.nn.MSELoss()).
    'cross_entropy': Ys (...) integer class ids, mean over targets of -log softmax(ys)[target]
    (torch.nn.CrossEntropyLoss()).
    """
    if loss == "mse":
        if Ys.shape != ys.shape:
            raise ValueError(f"mse target shape {Ys.shape} != output shape {ys.shape}")
        d = ys - Ys
        return (d ** 2).sum() / d.size, 2 * d / d.size
    if loss == "cross_entropy":
        if Ys.shape != ys.shape[:-1]:
            raise ValueError(f"cross_entropy target shape {Ys.shape} != {ys.shape[:-1]}")
        O = ys.shape[-1]
        logits = ys.reshape(-1, O)
        target = np.asarray(Ys).reshape(-1).astype(np.intp)
        N = target.size
        rows = np.arange(N)
        logp = log_softmax(logits)
        value = -logp[rows, target].sum() / N
        d = np.exp(logp)                     # softmax
        d[rows, target] -= 1
        return value, (d / N).reshape(ys.shape)
    raise ValueError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")


def _output_loss(y, Y, *, mode, loss, loss_start=0, lengths=None):
    """Loss on the outputs y (B, T, O) selected by mode / loss_start / lengths, and d loss / d y (B, T, O)
    (zero at the steps that are not in the loss). See loss_and_grad for the meaning of the arguments."""
    B, T, O = y.shape
    dy = np.zeros_like(y)
    if mode == "many_to_many":
        if lengths is not None:
            raise ValueError("lengths is only used with mode='many_to_one'")
        if not 0 <= loss_start < T:
            raise ValueError(f"loss_start must be in [0, T), got {loss_start}")
        value, dy[:, loss_start:] = _loss(y[:, loss_start:], np.asarray(Y)[:, loss_start:], loss)
    elif mode == "many_to_one":
        if loss_start != 0:
            raise ValueError("loss_start is only used with mode='many_to_many'")
        if lengths is None:
            t_idx = np.full(B, T - 1)
        else:
            t_idx = np.asarray(lengths).astype(np.intp) - 1
            if t_idx.shape != (B,) or t_idx.min() < 0 or t_idx.max() > T - 1:
                raise ValueError(f"lengths must be (B,) ints in 1..T, got {lengths}")
        rows = np.arange(B)
        value, dy[rows, t_idx] = _loss(y[rows, t_idx], np.asarray(Y), loss)
    else:
        raise ValueError(f"mode must be 'many_to_many' or 'many_to_one', got {mode!r}")
    return float(value), dy


def loss_value(params, X, Y, *, cell, num_layers, mode, loss, h0=None, c0=None, loss_start=0, lengths=None,
               masks=None):
    """The loss of loss_and_grad alone (forward pass only): the cheap f() for finite differences."""
    y = forward(params, X, cell=cell, num_layers=num_layers, h0=h0, c0=c0, masks=masks)["y"]
    return _output_loss(y, Y, mode=mode, loss=loss, loss_start=loss_start, lengths=lengths)[0]


# ----------------------------------------------------------------------------------------------- BPTT
def loss_and_grad(params, X, Y, *, cell, num_layers, mode, loss, h0=None, c0=None, loss_start=0, lengths=None,
                  masks=None):
    """Loss and its exact gradient by full backpropagation through time.

    mode 'many_to_many': the loss covers the outputs y_t of steps t >= loss_start;
        Y (B, T, O) for mse, (B, T) integer ids for cross_entropy (steps before loss_start are ignored).
    mode 'many_to_one': the loss covers one output per row, at step lengths[b]-1 (lengths (B,) in 1..T),
        or T-1 if lengths is None; Y (B, O) for mse, (B,) integer ids for cross_entropy.
    Returns (loss: float, grads) where grads has the keys of params plus 'h0' (num_layers, B, H) and, for lstm,
    'c0' (num_layers, B, H): gradients w.r.t. the initial state (the zeros state if h0/c0 is None).
    """
    fw = forward(params, X, cell=cell, num_layers=num_layers, h0=h0, c0=c0, masks=masks)
    between, _ = _masks(masks, num_layers)
    y = fw["y"]
    B, T, O = y.shape
    value, dy = _output_loss(y, Y, mode=mode, loss=loss, loss_start=loss_start, lengths=lengths)

    grads = {k: np.zeros_like(v) for k, v in params.items()}

    # --- head: y_t = h_t W^T + b
    W = params["head.weight"]
    dH = []                                  # gradient w.r.t. the top layer's h_t, per step, each (B, H)
    for t in range(T):
        h_t = fw["h_top"][:, t]
        grads["head.weight"] += dy[:, t].T @ h_t
        grads["head.bias"] += dy[:, t].sum(axis=0)
        dH.append(dy[:, t] @ W)

    # --- layers, top to bottom; within a layer, steps T-1 down to 0
    H = W.shape[1]
    grads["h0"] = np.zeros((num_layers, B, H), dtype=y.dtype)
    if cell == "lstm":
        grads["c0"] = np.zeros((num_layers, B, H), dtype=y.dtype)
    for l in reversed(range(num_layers)):
        dh_next = np.zeros((B, H), dtype=y.dtype)
        dc_next = np.zeros((B, H), dtype=y.dtype) if cell == "lstm" else None
        dX = [None] * T
        for t in reversed(range(T)):
            dX[t], dh_next, dc_next = _step_backward(
                cell, params, l, fw["caches"][l][t], dH[t] + dh_next, dc_next, grads)
        grads["h0"][l] = dh_next
        if cell == "lstm":
            grads["c0"][l] = dc_next
        if between[l] is not None:           # this layer read the one below through its mask
            dX = [dx_t * between[l][t] for t, dx_t in enumerate(dX)]
        dH = dX                              # the layer below receives the gradient w.r.t. its outputs
    return value, grads


# ----------------------------------------------------------------------------------------------- checking helper
def numerical_grad(f, arrays, eps=1e-6):
    """Central finite differences of the scalar f() w.r.t. every entry of every array in ``arrays``.

    Each entry is perturbed in place by +eps and -eps (f must read the arrays it is given) and then restored.
    Returns {key: float64 array of the array's shape}.
    """
    grads = {}
    for key, a in arrays.items():
        g = np.zeros(a.shape, dtype=np.float64)
        for idx in np.ndindex(a.shape):
            orig = a[idx]
            a[idx] = orig + eps
            fp = f()
            a[idx] = orig - eps
            fm = f()
            a[idx] = orig
            g[idx] = (fp - fm) / (2 * eps)
        grads[key] = g
    return grads
