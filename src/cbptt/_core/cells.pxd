# Cell kernels: the fused elementwise work of one time step, over a (rows, width) block.
# Forward kernels turn pre-activations into the stored activations in place; backward kernels
# turn the gradient w.r.t. h_t into pre-activation gradients. PyTorch's equations and gate order.
# The loops themselves are C, in cell_steps.h (compiled for the baseline ISA, AVX2+FMA and AVX-512,
# chosen at run time), over vmath.h's vectorised sigmoid and tanh; this file gives them one
# name per kernel over float and double.

from cython cimport floating


cdef extern from "_core/vmath.h" nogil:
    void cbptt_sigmoid_f32(const float* x, const float* bias, float* out, Py_ssize_t n)
    void cbptt_tanh_f32(const float* x, const float* bias, float* out, Py_ssize_t n)
    void cbptt_sigmoid_f64(const double* x, const double* bias, double* out, Py_ssize_t n)
    void cbptt_tanh_f64(const double* x, const double* bias, double* out, Py_ssize_t n)


cdef extern from "_core/cell_steps.h" nogil:
    void cbptt_elman_forward_f32(bint relu, float* pre, const float* bias, Py_ssize_t rows,
                                 Py_ssize_t hidden)
    void cbptt_elman_forward_f64(bint relu, double* pre, const double* bias, Py_ssize_t rows,
                                 Py_ssize_t hidden)
    void cbptt_elman_backward_f32(bint relu, const float* h, const float* dh_carry,
                                  const float* dh_inject, float* da, Py_ssize_t count)
    void cbptt_elman_backward_f64(bint relu, const double* h, const double* dh_carry,
                                  const double* dh_inject, double* da, Py_ssize_t count)
    void cbptt_lstm_forward_f32(float* gates, const float* bias, const float* c_prev, float* c,
                                float* h, Py_ssize_t rows, Py_ssize_t hidden)
    void cbptt_lstm_forward_f64(double* gates, const double* bias, const double* c_prev,
                                double* c, double* h, Py_ssize_t rows, Py_ssize_t hidden)
    void cbptt_gru_forward_f32(float* gates, const float* rec, const float* b_ih,
                               const float* b_hh, const float* h_prev, float* h, float* hn,
                               Py_ssize_t rows, Py_ssize_t hidden)
    void cbptt_gru_forward_f64(double* gates, const double* rec, const double* b_ih,
                               const double* b_hh, const double* h_prev, double* h, double* hn,
                               Py_ssize_t rows, Py_ssize_t hidden)
    void cbptt_lstm_backward_f32(const float* gates, const float* c_prev, const float* c,
                                 float* dh_carry, const float* dh_inject, float* dc, float* da,
                                 Py_ssize_t rows, Py_ssize_t hidden)
    void cbptt_lstm_backward_f64(const double* gates, const double* c_prev, const double* c,
                                 double* dh_carry, const double* dh_inject, double* dc,
                                 double* da, Py_ssize_t rows, Py_ssize_t hidden)
    void cbptt_gru_backward_f32(const float* gates, const float* hn, const float* h_prev,
                                float* dh, const float* dh_inject, float* da_hh, float* da_n,
                                Py_ssize_t rows, Py_ssize_t hidden)
    void cbptt_gru_backward_f64(const double* gates, const double* hn, const double* h_prev,
                                double* dh, const double* dh_inject, double* da_hh,
                                double* da_n, Py_ssize_t rows, Py_ssize_t hidden)


cdef inline void v_sigmoid(const floating* x, const floating* bias, floating* out,
                           Py_ssize_t n) noexcept nogil:
    """out = sigmoid(x + bias) over n entries (bias may be NULL; out may be x)."""
    if floating is float:
        cbptt_sigmoid_f32(x, bias, out, n)
    else:
        cbptt_sigmoid_f64(x, bias, out, n)


cdef inline void v_tanh(const floating* x, const floating* bias, floating* out,
                        Py_ssize_t n) noexcept nogil:
    """out = tanh(x + bias) over n entries (bias may be NULL; out may be x)."""
    if floating is float:
        cbptt_tanh_f32(x, bias, out, n)
    else:
        cbptt_tanh_f64(x, bias, out, n)


cdef inline void elman_forward(bint relu, floating* pre, const floating* bias,
                               Py_ssize_t rows, Py_ssize_t hidden) noexcept nogil:
    """h = act(pre + bias) in place (the loop is in cell_steps.h); pre (rows, hidden), bias
    (hidden,)."""
    if floating is float:
        cbptt_elman_forward_f32(relu, pre, bias, rows, hidden)
    else:
        cbptt_elman_forward_f64(relu, pre, bias, rows, hidden)


cdef inline void elman_backward(bint relu, const floating* h, const floating* dh_carry,
                                const floating* dh_inject, floating* da,
                                Py_ssize_t count) noexcept nogil:
    """da = (dh_carry + dh_inject) * act'(a), from the stored h = act(a), in the cell's own
    precision (the loop is in cell_steps.h); dh_inject may be NULL.

    tanh' = 1 - h^2, relu' = [h > 0]. All arrays hold count elements.
    """
    if floating is float:
        cbptt_elman_backward_f32(relu, h, dh_carry, dh_inject, da, count)
    else:
        cbptt_elman_backward_f64(relu, h, dh_carry, dh_inject, da, count)


cdef inline void lstm_forward(floating* gates, const floating* bias, const floating* c_prev,
                              floating* c, floating* h, Py_ssize_t rows,
                              Py_ssize_t hidden) noexcept nogil:
    """One LSTM step from pre-activations (one pass, in cell_steps.h): gates (rows, 4H) in z order
    i, f, g, o (without bias) become the activations i, f, g, o in place; c = f c_prev + i g;
    h = o tanh(c)."""
    if floating is float:
        cbptt_lstm_forward_f32(gates, bias, c_prev, c, h, rows, hidden)
    else:
        cbptt_lstm_forward_f64(gates, bias, c_prev, c, h, rows, hidden)


cdef inline void lstm_backward(const floating* gates, const floating* c_prev, const floating* c,
                               floating* dh_carry, const floating* dh_inject, floating* dc,
                               floating* da, Py_ssize_t rows, Py_ssize_t hidden) noexcept nogil:
    """Pre-activation gradients da (rows, 4H) of one LSTM step (the loop is in cell_steps.h; it
    recomputes tanh(c_t) rather than storing it); dh_inject may be NULL and is added into
    dh_carry.

    dc enters as dL/dc_t from step t+1 and leaves as dL/dc_{t-1} = dc f.
    do = dh tanh(c); dc += dh o (1 - tanh(c)^2); di = dc g; dg = dc i; df = dc c_prev;
    da = (di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)).
    """
    if floating is float:
        cbptt_lstm_backward_f32(gates, c_prev, c, dh_carry, dh_inject, dc, da, rows, hidden)
    else:
        cbptt_lstm_backward_f64(gates, c_prev, c, dh_carry, dh_inject, dc, da, rows, hidden)


cdef inline void gru_forward(floating* gates, const floating* rec, const floating* b_ih,
                             const floating* b_hh, const floating* h_prev, floating* h,
                             floating* hn, Py_ssize_t rows, Py_ssize_t hidden) noexcept nogil:
    """One GRU step (one pass, in cell_steps.h). gates (rows, 3H) holds x W_ih^T (order r, z, n,
    without bias) and becomes the activations r, z, n in place; rec (rows, 3H) = h_prev W_hh^T
    (without bias). r = s(xr + hr), z = s(xz + hz), hn = W_hn h + b_hn (kept),
    n = tanh(xn + r hn), h = (1 - z) n + z h_prev."""
    if floating is float:
        cbptt_gru_forward_f32(gates, rec, b_ih, b_hh, h_prev, h, hn, rows, hidden)
    else:
        cbptt_gru_forward_f64(gates, rec, b_ih, b_hh, h_prev, h, hn, rows, hidden)


cdef inline void gru_backward(const floating* gates, const floating* hn, const floating* h_prev,
                              floating* dh, const floating* dh_inject, floating* da_hh,
                              floating* da_n, Py_ssize_t rows, Py_ssize_t hidden) noexcept nogil:
    """Pre-activation gradients of one GRU step (the loop is in cell_steps.h); dh_inject may be
    NULL.

    dh enters as dL/dh_t from step t+1 and leaves holding the direct part of dL/dh_{t-1},
    dh z (the caller adds da_hh @ W_hh). da_hh (rows, 3H) = (dar, daz, dhn) are the recurrent
    side's gradients; the input side's are (dar, daz, da_n), da_n (rows, H).
    dn = dh (1 - z); dz = dh (h_prev - n); dan = dn (1 - n^2); dhn = dan r;
    dar = dan hn r(1-r); daz = dz z(1-z).
    """
    if floating is float:
        cbptt_gru_backward_f32(gates, hn, h_prev, dh, dh_inject, da_hh, da_n, rows, hidden)
    else:
        cbptt_gru_backward_f64(gates, hn, h_prev, dh, dh_inject, da_hh, da_n, rows, hidden)
