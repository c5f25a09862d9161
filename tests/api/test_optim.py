"""Optimisers against their update rules (as torch.optim documents them) and against
torch.optim itself; gradient clipping inside a trainer against a manual computation."""
import numpy as np
import pytest

import cbptt

N = 7


def grad_sequence(steps, seed=0, size=N):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=size) for _ in range(steps)]


def start_params(seed=1, size=N):
    return np.random.default_rng(seed).normal(size=size)


def run(optimizer, params, grads):
    """Apply optimizer to a copy of params for each gradient (copies: step may scribble on
    grads); return the parameters after every step."""
    params = params.copy()
    history = []
    for g in grads:
        g_in = g.copy()
        optimizer.step(params, g_in)
        history.append(params.copy())
    return history


# ---------------------------------------------------------------- reference update rules (torch docs)
def sgd_reference(params, grads, lr, momentum=0.0, dampening=0.0, nesterov=False,
                  weight_decay=0.0):
    """torch.optim.SGD, as its documentation writes it:

        g_t = grad + weight_decay * theta_{t-1}
        if momentum != 0:
            b_t = g_t                                   (t == 1)
            b_t = momentum * b_{t-1} + (1 - dampening) * g_t   (t > 1)
            g_t = g_t + momentum * b_t  if nesterov  else  b_t
        theta_t = theta_{t-1} - lr * g_t
    """
    theta = params.copy()
    b = None
    history = []
    for t, grad in enumerate(grads, start=1):
        g = grad + weight_decay * theta
        if momentum != 0:
            b = g if t == 1 else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        theta = theta - lr * g
        history.append(theta)
    return history


def adam_reference(params, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """torch.optim.Adam (amsgrad=False), as its documentation writes it:

        g_t = grad + weight_decay * theta_{t-1}
        m_t = beta1 * m_{t-1} + (1 - beta1) * g_t
        v_t = beta2 * v_{t-1} + (1 - beta2) * g_t^2
        m_hat = m_t / (1 - beta1^t) ; v_hat = v_t / (1 - beta2^t)
        theta_t = theta_{t-1} - lr * m_hat / (sqrt(v_hat) + eps)
    """
    beta1, beta2 = betas
    theta = params.copy()
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    history = []
    for t, grad in enumerate(grads, start=1):
        g = grad + weight_decay * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
        history.append(theta)
    return history


SGD_CONFIGS = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9),
    "nesterov": dict(lr=0.05, momentum=0.8, nesterov=True),
    "dampening": dict(lr=0.1, momentum=0.9, dampening=0.3),
    "weight_decay": dict(lr=0.1, weight_decay=0.01),
    "momentum_weight_decay": dict(lr=0.1, momentum=0.5, weight_decay=0.1),
    "nesterov_weight_decay": dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.05),
    "all_but_nesterov": dict(lr=0.3, momentum=0.7, dampening=0.1, weight_decay=0.2),
}
ADAM_CONFIGS = {
    "default": dict(lr=1e-3),
    "large_lr": dict(lr=0.1, betas=(0.8, 0.99), eps=1e-6),
    "weight_decay": dict(lr=0.01, weight_decay=0.1),
    "weight_decay_betas": dict(lr=0.05, betas=(0.5, 0.9), eps=1e-4, weight_decay=0.5),
}


@pytest.mark.parametrize("name", list(SGD_CONFIGS))
def test_sgd_three_steps_match_update_rule(name):
    kwargs = SGD_CONFIGS[name]
    params, grads = start_params(), grad_sequence(3)
    got = run(cbptt.SGD(**kwargs), params, grads)
    expected = sgd_reference(params, grads, **kwargs)
    for step, (g, e) in enumerate(zip(got, expected), start=1):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-15, err_msg=f"step {step}")


@pytest.mark.parametrize("name", list(ADAM_CONFIGS))
def test_adam_three_steps_match_update_rule(name):
    kwargs = ADAM_CONFIGS[name]
    params, grads = start_params(), grad_sequence(3)
    got = run(cbptt.Adam(**kwargs), params, grads)
    expected = adam_reference(params, grads, **kwargs)
    for step, (g, e) in enumerate(zip(got, expected), start=1):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-15, err_msg=f"step {step}")


def test_sgd_momentum_by_hand():
    """p = 1, g = 1 every step, lr 0.1, momentum 0.9: buffers 1, 1.9, 2.71."""
    p = np.array([1.0, -2.0])
    opt = cbptt.SGD(lr=0.1, momentum=0.9)
    expected = [[0.9, -2.1], [0.71, -2.29], [0.439, -2.561]]
    for want in expected:
        opt.step(p, np.array([1.0, 1.0]))
        np.testing.assert_allclose(p, want, rtol=1e-14)
    np.testing.assert_allclose(opt.buffer, [2.71, 2.71], rtol=1e-14)
    assert opt.steps == 3


def test_adam_first_step_is_lr_times_sign():
    """Bias correction makes the first Adam step -lr * g / (|g| + eps') = about -lr * sign(g)."""
    p = np.zeros(4)
    g = np.array([3.0, -0.5, 1e-3, -20.0])
    cbptt.Adam(lr=0.01, eps=0.0).step(p, g.copy())
    np.testing.assert_allclose(p, -0.01 * np.sign(g), rtol=1e-12)


@pytest.mark.parametrize("make", [lambda: cbptt.SGD(lr=0.1, momentum=0.9, weight_decay=0.1),
                                  lambda: cbptt.Adam(lr=0.01, weight_decay=0.1)],
                         ids=["sgd", "adam"])
def test_float32_params_stay_float32(make):
    params, grads = start_params(), grad_sequence(3)
    got32 = run(make(), params.astype(np.float32), [g.astype(np.float32) for g in grads])
    got64 = run(make(), params, grads)
    for a, b in zip(got32, got64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ torch
def _torch_run(torch, cls, kwargs, params, grads):
    p = torch.nn.Parameter(torch.tensor(params, dtype=torch.float64))
    opt = cls([p], **kwargs)
    history = []
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        history.append(p.detach().numpy().copy())
    return history, opt.state[p]


@pytest.mark.parametrize("name", list(SGD_CONFIGS))
def test_sgd_matches_torch(name):
    torch = pytest.importorskip("torch")
    kwargs = SGD_CONFIGS[name]
    params, grads = start_params(2), grad_sequence(5, seed=3)
    ours = cbptt.SGD(**kwargs)
    got = run(ours, params, grads)
    expected, state = _torch_run(torch, torch.optim.SGD, kwargs, params, grads)
    for step, (g, e) in enumerate(zip(got, expected), start=1):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-15, err_msg=f"step {step}")
    if kwargs.get("momentum"):
        np.testing.assert_allclose(ours.buffer, state["momentum_buffer"].numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", list(ADAM_CONFIGS))
def test_adam_matches_torch(name):
    torch = pytest.importorskip("torch")
    kwargs = ADAM_CONFIGS[name]
    params, grads = start_params(2), grad_sequence(5, seed=3)
    ours = cbptt.Adam(**kwargs)
    got = run(ours, params, grads)
    expected, state = _torch_run(torch, torch.optim.Adam, kwargs, params, grads)
    for step, (g, e) in enumerate(zip(got, expected), start=1):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-15, err_msg=f"step {step}")
    np.testing.assert_allclose(ours.exp_avg, state["exp_avg"].numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.exp_avg_sq, state["exp_avg_sq"].numpy(), rtol=1e-12)
    assert ours.steps == int(state["step"])


# ------------------------------------------------------------------------------- optimiser state
@pytest.mark.parametrize("make", [lambda: cbptt.SGD(lr=0.1, momentum=0.9),
                                  lambda: cbptt.SGD(lr=0.1), lambda: cbptt.Adam()],
                         ids=["sgd_momentum", "sgd", "adam"])
def test_optimizer_refuses_a_second_model_of_other_size(make):
    X = np.random.default_rng(0).normal(size=(2, 4, 3))
    m1 = cbptt.RNN(3, 4, 2, seed=0)
    m2 = cbptt.RNN(3, 5, 2, seed=0)
    assert m1.num_parameters != m2.num_parameters
    opt = make()
    t1 = cbptt.ManyToMany(m1, optimizer=opt)
    t2 = cbptt.ManyToMany(m2, optimizer=opt)
    Y = np.zeros((2, 4, 2))
    t1.step(X, Y)
    before2, steps = m2.params.copy(), opt.steps
    with pytest.raises(ValueError, match="parameters"):
        t2.step(X, Y)
    assert m2.params.tobytes() == before2.tobytes()
    assert opt.steps == steps
    with pytest.raises(ValueError):
        opt.step(np.zeros(3), np.zeros(3))
    t1.step(X, Y)                                   # still serves the first model
    assert opt.steps == steps + 1
    opt.reset()                                     # after reset it may bind to another size
    t2.step(X, Y)
    assert opt.steps == 1


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=0), "lr"), (dict(lr=-0.1), "lr"), (dict(lr=float("nan")), "lr"),
    (dict(lr=float("inf")), "lr"),
    (dict(lr=0.1, nesterov=True), "nesterov"),
    (dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (dict(lr=0.1, momentum=-0.5), "momentum"),
    (dict(lr=0.1, momentum=float("nan")), "momentum"),
    (dict(lr=0.1, weight_decay=-1e-3), "weight_decay"),
    (dict(lr=0.1, weight_decay=float("nan")), "weight_decay"),
    (dict(lr=0.1, momentum=0.9, dampening=float("nan")), "dampening"),
])
def test_sgd_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cbptt.SGD(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(lr=0), "lr"), (dict(lr=-1e-3), "lr"), (dict(lr=float("nan")), "lr"),
    (dict(betas=(1.0, 0.999)), "betas"), (dict(betas=(0.9, 1.0)), "betas"),
    (dict(betas=(-0.1, 0.999)), "betas"), (dict(betas=(0.9, -0.5)), "betas"),
    (dict(betas=(float("nan"), 0.999)), "betas"), (dict(betas=(0.9,)), "betas"),
    (dict(betas=(0.9, 0.99, 0.9)), "betas"), (dict(betas=0.9), "betas"),
    (dict(eps=-1e-8), "eps"), (dict(eps=float("nan")), "eps"),
    (dict(weight_decay=-0.1), "weight_decay"),
])
def test_adam_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cbptt.Adam(**kwargs)


def test_valid_edge_constructors():
    cbptt.SGD(lr=1e-12)
    cbptt.SGD(lr=0.1, momentum=0.9, nesterov=True)
    cbptt.Adam(betas=(0.0, 0.0), eps=0.0)


# ------------------------------------------------------------------------------- clip_norm
def _flat(model, grads):
    return np.concatenate([grads[name].ravel() for name, _ in model.named_parameters()])


TRAINER_CASES = [
    ("m2m-mse-sgd", cbptt.ManyToMany, "mse", lambda: cbptt.SGD(lr=0.1, momentum=0.9)),
    ("m2o-ce-adam", cbptt.ManyToOne, "cross_entropy", lambda: cbptt.Adam(lr=0.05)),
    ("m2m-ce-nesterov", cbptt.ManyToMany, "cross_entropy",
     lambda: cbptt.SGD(lr=0.2, momentum=0.5, nesterov=True, weight_decay=0.01)),
]


def _trainer_data(cls, loss, B=3, T=4, I=2, O=3):
    rng = np.random.default_rng(0)
    X = 2.0 * rng.normal(size=(B, T, I))
    if loss == "mse":
        Y = 3.0 * rng.normal(size=(B, T, O) if cls is cbptt.ManyToMany else (B, O))
    else:
        Y = rng.integers(0, O, size=(B, T) if cls is cbptt.ManyToMany else (B,))
    h0 = rng.normal(size=(2, B, 5))
    return X, Y, h0


@pytest.mark.parametrize("case", TRAINER_CASES, ids=[c[0] for c in TRAINER_CASES])
@pytest.mark.parametrize("clips", [True, False], ids=["clipping", "not_clipping"])
def test_clip_norm_matches_manual_computation(case, clips):
    _, cls, loss, make_opt = case
    X, Y, h0 = _trainer_data(cls, loss)
    make_model = lambda: cbptt.RNN(2, 5, 3, num_layers=2, seed=0)  # noqa: E731

    # the first step's gradient norm decides a clip_norm that does / does not clip
    probe = cls(make_model(), loss=loss)
    norm0 = np.linalg.norm(_flat(probe.model, probe.loss_and_grad(X, Y, h0=h0)[1]))
    clip_norm = 0.3 * norm0 if clips else 10.0 * norm0

    trainer = cls(make_model(), loss=loss, optimizer=make_opt(), clip_norm=clip_norm)
    ref_model = make_model()
    ref_grads = cls(ref_model, loss=loss)          # only for loss_and_grad
    ref_opt = make_opt()
    unclipped = cls(make_model(), loss=loss, optimizer=make_opt())
    clipped_any = False
    for _ in range(3):
        loss_t = trainer.step(X, Y, h0=h0)
        loss_r, grads = ref_grads.loss_and_grad(X, Y, h0=h0)
        assert loss_t == pytest.approx(loss_r, rel=1e-12)   # params may differ by an ulp
        flat = _flat(ref_model, grads)
        total_norm = np.sqrt(np.sum(flat ** 2))
        coef = clip_norm / (total_norm + 1e-6)
        if coef < 1:
            flat = flat * coef
            clipped_any = True
        ref_opt.step(ref_model.params, flat)
        np.testing.assert_allclose(trainer.model.params, ref_model.params, rtol=1e-12,
                                   atol=1e-15)
        unclipped.step(X, Y, h0=h0)
    assert clipped_any == clips
    if clips:
        assert not np.allclose(trainer.model.params, unclipped.model.params, rtol=1e-6)
    else:   # never clipped: exactly the trainer without clip_norm
        assert trainer.model.params.tobytes() == unclipped.model.params.tobytes()


def test_clip_norm_matches_torch_clip_grad_norm():
    torch = pytest.importorskip("torch")
    X, Y, h0 = _trainer_data(cbptt.ManyToMany, "mse")
    model = cbptt.RNN(2, 5, 3, num_layers=2, seed=0)
    _, grads = cbptt.ManyToMany(model).loss_and_grad(X, Y, h0=h0)
    flat = _flat(model, grads)
    max_norm = 0.25 * np.linalg.norm(flat)
    tensors = []
    for name, _ in model.named_parameters():
        p = torch.nn.Parameter(torch.zeros(grads[name].shape, dtype=torch.float64))
        p.grad = torch.from_numpy(grads[name].copy())
        tensors.append(p)
    torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    expected = np.concatenate([p.grad.numpy().ravel() for p in tensors])

    trainer = cbptt.ManyToMany(cbptt.RNN(2, 5, 3, num_layers=2, seed=0),
                               optimizer=cbptt.SGD(lr=1.0), clip_norm=max_norm)
    before = trainer.model.params.copy()
    trainer.step(X, Y, h0=h0)
    np.testing.assert_allclose(before - trainer.model.params, expected, rtol=1e-10,
                               atol=1e-15)
