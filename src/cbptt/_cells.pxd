# Cell kernels: the fused elementwise work of one time step, over a (rows, width) block.
# Forward kernels turn pre-activations into the stored activations in place; backward kernels
# turn the gradient w.r.t. h_t into pre-activation gradients. PyTorch's equations and gate order.

from cython cimport floating
from libc.math cimport tanh, tanhf, exp, expf


cdef inline floating sigmoid(floating x) noexcept nogil:
    """1 / (1 + e^-x), written so that neither branch overflows."""
    cdef floating e
    if floating is float:
        if x >= 0:
            return 1.0 / (1.0 + expf(-x))
        e = expf(x)
        return e / (1.0 + e)
    else:
        if x >= 0:
            return 1.0 / (1.0 + exp(-x))
        e = exp(x)
        return e / (1.0 + e)


cdef inline floating tanh_f(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)


cdef inline void elman_forward(bint relu, floating* pre, const floating* bias,
                               Py_ssize_t rows, Py_ssize_t hidden) noexcept nogil:
    """h = act(pre + bias) in place; pre (rows, hidden), bias (hidden,)."""
    cdef Py_ssize_t r, j
    cdef floating v
    for r in range(rows):
        if relu:
            for j in range(hidden):
                v = pre[r * hidden + j] + bias[j]
                pre[r * hidden + j] = v if v > 0 else 0
        else:
            for j in range(hidden):
                pre[r * hidden + j] = tanh_f(pre[r * hidden + j] + bias[j])


cdef inline void elman_backward(bint relu, const floating* h, const floating* dh_carry,
                                const floating* dh_inject, floating* da,
                                Py_ssize_t count) noexcept nogil:
    """da = (dh_carry + dh_inject) * act'(a), from the stored h = act(a); dh_inject may be NULL.

    tanh' = 1 - h^2, relu' = [h > 0]. All arrays hold count elements.
    """
    cdef Py_ssize_t j
    if dh_inject == NULL:
        if relu:
            for j in range(count):
                da[j] = dh_carry[j] if h[j] > 0 else 0
        else:
            for j in range(count):
                da[j] = dh_carry[j] * (1 - h[j] * h[j])
    else:
        if relu:
            for j in range(count):
                da[j] = (dh_carry[j] + dh_inject[j]) if h[j] > 0 else 0
        else:
            for j in range(count):
                da[j] = (dh_carry[j] + dh_inject[j]) * (1 - h[j] * h[j])


cdef inline void lstm_forward(floating* gates, const floating* bias, const floating* c_prev,
                              floating* c, floating* h, Py_ssize_t rows,
                              Py_ssize_t hidden) noexcept nogil:
    """One LSTM step from pre-activations: gates (rows, 4H) in z order i, f, g, o (without
    bias) become the activations i, f, g, o in place; c = f c_prev + i g; h = o tanh(c)."""
    cdef Py_ssize_t r, j
    cdef floating* z
    cdef floating i_g, f_g, g_g, o_g, c_new
    for r in range(rows):
        z = gates + r * 4 * hidden
        for j in range(hidden):
            i_g = sigmoid(z[j] + bias[j])
            f_g = sigmoid(z[hidden + j] + bias[hidden + j])
            g_g = tanh_f(z[2 * hidden + j] + bias[2 * hidden + j])
            o_g = sigmoid(z[3 * hidden + j] + bias[3 * hidden + j])
            c_new = f_g * c_prev[r * hidden + j] + i_g * g_g
            z[j] = i_g
            z[hidden + j] = f_g
            z[2 * hidden + j] = g_g
            z[3 * hidden + j] = o_g
            c[r * hidden + j] = c_new
            h[r * hidden + j] = o_g * tanh_f(c_new)


cdef inline void lstm_backward(const floating* gates, const floating* c_prev, const floating* c,
                               const floating* dh_carry, const floating* dh_inject,
                               floating* dc, floating* da, Py_ssize_t rows,
                               Py_ssize_t hidden) noexcept nogil:
    """Pre-activation gradients da (rows, 4H) of one LSTM step; dh_inject may be NULL.

    dc enters as dL/dc_t from step t+1 and leaves as dL/dc_{t-1} = dc f.
    do = dh tanh(c); dc += dh o (1 - tanh(c)^2); di = dc g; dg = dc i; df = dc c_prev;
    da = (di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)).
    """
    cdef Py_ssize_t r, j, k
    cdef const floating* act
    cdef floating* d
    cdef floating i_g, f_g, g_g, o_g, tc, dh, dcell
    for r in range(rows):
        act = gates + r * 4 * hidden
        d = da + r * 4 * hidden
        for j in range(hidden):
            k = r * hidden + j
            i_g = act[j]
            f_g = act[hidden + j]
            g_g = act[2 * hidden + j]
            o_g = act[3 * hidden + j]
            dh = dh_carry[k] if dh_inject == NULL else dh_carry[k] + dh_inject[k]
            tc = tanh_f(c[k])
            dcell = dc[k] + dh * o_g * (1 - tc * tc)
            d[j] = dcell * g_g * i_g * (1 - i_g)
            d[hidden + j] = dcell * c_prev[k] * f_g * (1 - f_g)
            d[2 * hidden + j] = dcell * i_g * (1 - g_g * g_g)
            d[3 * hidden + j] = dh * tc * o_g * (1 - o_g)
            dc[k] = dcell * f_g


cdef inline void gru_forward(floating* gates, const floating* rec, const floating* b_ih,
                             const floating* b_hh, const floating* h_prev, floating* h,
                             floating* hn, Py_ssize_t rows, Py_ssize_t hidden) noexcept nogil:
    """One GRU step. gates (rows, 3H) holds x W_ih^T (order r, z, n, without bias) and becomes
    the activations r, z, n in place; rec (rows, 3H) = h_prev W_hh^T (without bias).
    r = s(xr + hr), z = s(xz + hz), hn = W_hn h + b_hn (kept), n = tanh(xn + r hn),
    h = (1 - z) n + z h_prev."""
    cdef Py_ssize_t r, j, k
    cdef floating* g
    cdef const floating* q
    cdef floating r_g, z_g, n_g, hn_v
    for r in range(rows):
        g = gates + r * 3 * hidden
        q = rec + r * 3 * hidden
        for j in range(hidden):
            k = r * hidden + j
            r_g = sigmoid(g[j] + b_ih[j] + q[j] + b_hh[j])
            z_g = sigmoid(g[hidden + j] + b_ih[hidden + j] + q[hidden + j] + b_hh[hidden + j])
            hn_v = q[2 * hidden + j] + b_hh[2 * hidden + j]
            n_g = tanh_f(g[2 * hidden + j] + b_ih[2 * hidden + j] + r_g * hn_v)
            g[j] = r_g
            g[hidden + j] = z_g
            g[2 * hidden + j] = n_g
            hn[k] = hn_v
            h[k] = (1 - z_g) * n_g + z_g * h_prev[k]


cdef inline void gru_backward(const floating* gates, const floating* hn, const floating* h_prev,
                              floating* dh, const floating* dh_inject, floating* da_hh,
                              floating* da_n, Py_ssize_t rows, Py_ssize_t hidden) noexcept nogil:
    """Pre-activation gradients of one GRU step; dh_inject may be NULL.

    dh enters as dL/dh_t from step t+1 and leaves holding the direct part of dL/dh_{t-1},
    dh z (the caller adds da_hh @ W_hh). da_hh (rows, 3H) = (dar, daz, dhn) are the recurrent
    side's gradients; the input side's are (dar, daz, da_n), da_n (rows, H).
    dn = dh (1 - z); dz = dh (h_prev - n); dan = dn (1 - n^2); dhn = dan r;
    dar = dan hn r(1-r); daz = dz z(1-z).
    """
    cdef Py_ssize_t r, j, k
    cdef const floating* g
    cdef floating* d
    cdef floating r_g, z_g, n_g, grad, dan
    for r in range(rows):
        g = gates + r * 3 * hidden
        d = da_hh + r * 3 * hidden
        for j in range(hidden):
            k = r * hidden + j
            r_g = g[j]
            z_g = g[hidden + j]
            n_g = g[2 * hidden + j]
            grad = dh[k] if dh_inject == NULL else dh[k] + dh_inject[k]
            dan = grad * (1 - z_g) * (1 - n_g * n_g)
            d[j] = dan * hn[k] * r_g * (1 - r_g)
            d[hidden + j] = grad * (h_prev[k] - n_g) * z_g * (1 - z_g)
            d[2 * hidden + j] = dan * r_g
            da_n[k] = dan
            dh[k] = grad * z_g
