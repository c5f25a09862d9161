"""The loss kernels (_core/losses.pxd) through cbptt._kernels.loss, against a NumPy twin written
here in float64: mean squared error and cross-entropy, value and gradient, on a block of steps
and batch rows of the (batch, steps) grid (predictions time-major and holding those steps
only, targets and weights batch-first over all steps), with weights (zeros among them), one
row, one class, and logits far beyond exp's range. The value is summed in double from either
dtype (1e-12 of the magnitudes summed); the gradient is rounded once to float32 (2 ulp)."""
import numpy as np
import pytest

from cbptt import _kernels

DTYPES = [np.float64, np.float32]
KINDS = ["mse", "cross_entropy"]


def loss_twin(kind, pred, target, weight, scale, first, row0, rows):
    """(value, dpred, magnitude) in float64: dpred (count, batch, width) is zero outside the
    rows; magnitude sums the |terms| that value's sum adds and cancels (its error's scale)."""
    count, batch, width = pred.shape
    p = pred.astype(np.float64)[:, row0:row0 + rows]            # (count, rows, width)
    block = (slice(row0, row0 + rows), slice(first, first + count))
    w = np.ones((count, rows)) if weight is None else weight[block].T.astype(np.float64)
    if kind == "mse":
        diff = p - target[block].transpose(1, 0, 2).astype(np.float64)
        losses = (diff ** 2).sum(axis=-1)
        magnitude = losses
        grad = 2 * scale * w[..., None] * diff
    else:
        labels = target[block].T[..., None]                     # (count, rows, 1)
        top = p.max(axis=-1, keepdims=True)
        log_norm = np.log(np.exp(p - top).sum(axis=-1, keepdims=True))
        chosen = np.take_along_axis(p, labels, axis=-1)
        losses = (top + log_norm - chosen)[..., 0]
        magnitude = (np.abs(top) + log_norm + np.abs(chosen))[..., 0]
        grad = scale * w[..., None] * (np.exp(p - top - log_norm) -
                                       (np.arange(width) == labels))
    dpred = np.zeros(pred.shape)
    dpred[:, row0:row0 + rows] = grad
    return scale * (w * losses).sum(), dpred, abs(scale) * (w * magnitude).sum()


def make_case(kind, dtype, count, batch, width, steps, weighted, rng, spread=1.0):
    pred = (spread * rng.standard_normal((count, batch, width))).astype(dtype)
    if kind == "mse":
        target = rng.standard_normal((batch, steps, width)).astype(dtype)
    else:
        target = rng.integers(0, width, (batch, steps))
    weight = rng.uniform(0, 2, (batch, steps)).astype(dtype) if weighted else None
    return pred, target, weight


def check(kind, pred, target, weight, scale, first=0, row0=0, rows=None):
    """Run the kernel (dpred filled with NaN beforehand) and compare with the twin."""
    dtype = pred.dtype.type
    rows = pred.shape[1] - row0 if rows is None else rows
    dpred = np.full_like(pred, np.nan)
    value, got = _kernels.loss(kind, pred, target, weight, scale, first=first, row0=row0,
                               rows=rows, dpred=dpred)
    assert got is dpred and got.dtype == dtype
    want_value, want, magnitude = loss_twin(kind, pred, target, weight, scale, first, row0,
                                            rows)
    assert abs(value - want_value) <= 1e-12 * magnitude + 1e-300, (value, want_value)
    outside = np.ones(pred.shape[1], bool)
    outside[row0:row0 + rows] = False
    assert np.isnan(got[:, outside]).all()                    # rows outside: not written
    inside = got[:, row0:row0 + rows].astype(np.float64)
    want = want[:, row0:row0 + rows]
    if dtype == np.float64:
        np.testing.assert_allclose(inside, want, rtol=1e-12, atol=1e-300)
    else:
        ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
        assert np.all(np.abs(inside - want) <= 2 * ulp), np.max(np.abs(inside - want) / ulp)
    return value, got


# (count, batch, width, steps, first, row0, rows): one row, one step, blocks inside the grid
BLOCKS = [(1, 1, 1, 1, 0, 0, 1), (1, 1, 3, 4, 3, 0, 1), (3, 2, 5, 3, 0, 0, 2),
          (4, 5, 17, 9, 2, 1, 3), (2, 6, 33, 5, 3, 5, 1)]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_value_and_gradient_match_the_twin(kind, dtype, block, weighted):
    count, batch, width, steps, first, row0, rows = block
    if kind == "cross_entropy" and width == 1:
        width = 2
    rng = np.random.default_rng(count * 1000 + batch * 100 + width)
    pred, target, weight = make_case(kind, dtype, count, batch, width, steps, weighted, rng)
    value, _ = check(kind, pred, target, weight, 1.0 / (count * rows), first, row0, rows)
    assert value > 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_rows_of_weight_zero_add_nothing(kind, dtype):
    """Zero weights (a whole batch row, a whole step): zero gradient there, and the value and
    the other rows' gradients do not depend on the predictions there."""
    rng = np.random.default_rng(2)
    pred, target, weight = make_case(kind, dtype, 3, 4, 6, 3, True, rng)
    weight[1, :] = 0                       # batch row 1: pred[:, 1]
    weight[:, 2] = 0                       # step 2: pred[2]
    value, got = check(kind, pred, target, weight, 0.37)
    assert np.all(got[:, 1] == 0) and np.all(got[2] == 0)
    changed = pred.copy()
    changed[:, 1] = rng.uniform(-1e3, 1e3, changed[:, 1].shape)
    changed[2] = rng.uniform(-1e3, 1e3, changed[2].shape)
    changed_value, changed_grad = _kernels.loss(kind, changed, target, weight, 0.37)
    assert changed_value == value
    np.testing.assert_array_equal(changed_grad, got)
    zero_value, zero = _kernels.loss(kind, pred, target, np.zeros_like(weight), 0.37)
    assert zero_value == 0 and np.all(zero == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spread", [1e2, 1e3, 1e4])
def test_cross_entropy_with_logits_beyond_exp_range(dtype, spread):
    """Logits of hundreds to ten thousands (exp overflows past 88.7 in float32 and 709.8 in
    float64): the maximum is subtracted first, so the value and gradient are finite and the
    twin's; softmax rows sum to one, so a row's gradient sums to zero."""
    rng = np.random.default_rng(int(spread))
    pred, target, _ = make_case("cross_entropy", dtype, 2, 3, 7, 2, False, rng, spread)
    pred[0, 0] = spread                    # every logit of a row equal and huge: log(7) each
    value, got = check("cross_entropy", pred, target, None, 0.5)
    assert np.isfinite(value) and np.all(np.isfinite(got))
    np.testing.assert_allclose(got.astype(np.float64).sum(axis=-1), 0, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_of_one_class_is_zero(dtype):
    pred = np.array([[[3.0]], [[-500.0]]], dtype)
    value, got = _kernels.loss("cross_entropy", pred, np.zeros((1, 2), np.int64), None, 1.0)
    assert value == 0 and np.all(got == 0)


def test_the_wrapper_refuses_what_the_kernels_cannot_take():
    pred = np.zeros((2, 3, 4))
    ids = np.zeros((3, 2), np.int64)
    cases = [
        (lambda: _kernels.loss("hinge", pred, ids), "kind must be"),
        (lambda: _kernels.loss("mse", pred, ids), r"target must have the shape \(batch=3"),
        (lambda: _kernels.loss("mse", pred, np.zeros((3, 2, 4), np.float32)),
         "target must be a C-contiguous float64"),
        (lambda: _kernels.loss("cross_entropy", pred, ids.astype(np.int32)), "int64"),
        (lambda: _kernels.loss("cross_entropy", pred, ids + 4), r"class ids must lie in \[0, 4\)"),
        (lambda: _kernels.loss("cross_entropy", pred, ids, np.ones((3, 2), np.float32)),
         "weight must be"),
        (lambda: _kernels.loss("cross_entropy", pred, ids, first=1), "steps"),
        (lambda: _kernels.loss("cross_entropy", pred, ids, row0=2, rows=2), "rows"),
        (lambda: _kernels.loss("cross_entropy", pred.astype(np.float16), ids), "pred must"),
        (lambda: _kernels.loss("cross_entropy", pred, ids, dpred=np.zeros((2, 3, 4), np.float32)),
         "dpred must"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
