"""Float64 references: one plain statement of what every op computes.

Every backend is tested against these, so they share no code with any backend: this module
imports NumPy and the problem types, nothing else (padding, windows and divisors are stated here
again, not borrowed from the helpers the backends use). They favour clarity over speed, but are
vectorised enough (NumPy over batch and channels) to serve as the reference on the small problems
the tests use. Convolutions also have a chunked form (a sum over the filter taps, a few images at a
time) whose memory stays bounded on the large problems of real suites. Inputs are converted to
float64; outputs are float64.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from convbench.ops.conv import Conv2dProblem


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64) for a in arrays]


def _padded(x, p: Conv2dProblem):
    """x (N, C, H, W) with p's zero padding: xpad (N, C, Hp, Wp)."""
    (pt, pb), (pl, pr) = p.padding
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))


def _cropped(xp, p: Conv2dProblem):
    """The (N, C, H, W) interior of a padded array."""
    (pt, _), (pl, _) = p.padding
    return xp[:, :, pt:pt + p.H, pl:pl + p.W]


def _windows(xp, p: Conv2dProblem):
    """The receptive field of every output, a view: win[n, c, i, j, r, s] =
    xpad[n, c, i*sh + r*dh, j*sw + s*dw]."""
    (sh, sw), (dh, dw) = p.stride, p.dilation
    extent = ((p.R - 1) * dh + 1, (p.S - 1) * dw + 1)
    return sliding_window_view(xp, extent, axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]


# --- 2D convolution -------------------------------------------------------------------------------
def conv2d_fwd(p: Conv2dProblem, x, w, b=None):
    """y[n, k, i, j] = b[k] + sum_{c, r, s} w[k, c, r, s]
                                           * xpad[n, g*Cg + c, i*sh + r*dh, j*sw + s*dw]

    x (N, C, H, W), w (K, C/groups, R, S), b (K,) or None -> y (N, K, P, Q); g = k // (K/groups).
    """
    x, w, b = _f64(x, w, b)
    win = _windows(_padded(x, p), p)                    # (N, C, P, Q, R, S)
    y = np.empty(p.y_shape)
    for g in range(p.groups):
        ci, ko = slice(g * p.Cg, (g + 1) * p.Cg), slice(g * p.Kg, (g + 1) * p.Kg)
        y[:, ko] = np.einsum("ncijrs,kcrs->nkij", win[:, ci], w[ko], optimize=True)
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv2d_bwd_data(p: Conv2dProblem, dy, w):
    """dx = d(sum dy * y)/dx: each dy[n, k, i, j] * w[k, c, r, s] lands on the input pixel the
    forward pass read, xpad[n, c, i*sh + r*dh, j*sw + s*dw]; the padding is cropped off.

    dy (N, K, P, Q), w (K, C/groups, R, S) -> dx (N, C, H, W).
    """
    dy, w = _f64(dy, w)
    dxp = np.zeros((p.N, p.C, p.Hp, p.Wp))
    (dh, dw_), (sh, sw) = p.dilation, p.stride
    for g in range(p.groups):
        ci, ko = slice(g * p.Cg, (g + 1) * p.Cg), slice(g * p.Kg, (g + 1) * p.Kg)
        for r in range(p.R):
            for s in range(p.S):
                contrib = np.einsum("nkij,kc->ncij", dy[:, ko], w[ko, :, r, s])
                dxp[:, ci, r * dh:r * dh + (p.P - 1) * sh + 1:sh,
                    s * dw_:s * dw_ + (p.Q - 1) * sw + 1:sw] += contrib
    return _cropped(dxp, p).copy()


def conv2d_bwd_weights(p: Conv2dProblem, dy, x):
    """dw[k, c, r, s] = sum_{n, i, j} dy[n, k, i, j] * xpad[n, g*Cg + c, i*sh + r*dh, j*sw + s*dw]

    dy (N, K, P, Q), x (N, C, H, W) -> dw (K, C/groups, R, S).
    """
    dy, x = _f64(dy, x)
    win = _windows(_padded(x, p), p)
    dw = np.empty(p.w_shape)
    for g in range(p.groups):
        ci, ko = slice(g * p.Cg, (g + 1) * p.Cg), slice(g * p.Kg, (g + 1) * p.Kg)
        dw[ko] = np.einsum("nkij,ncijrs->kcrs", dy[:, ko], win[:, ci], optimize=True)
    return dw


def conv2d_bwd_bias(dy):
    """db[k] = sum_{n, i, j} dy[n, k, i, j]."""
    return np.asarray(dy, dtype=np.float64).sum(axis=(0, 2, 3))


# --- 2D convolution, chunked: the same sums, a filter tap and a few images at a time --------------
#: Input elements (float64) the chunked references copy at once, at most (beyond one image).
CHUNK_ELEMENTS = 1 << 22


def _image_chunks(p: Conv2dProblem, per_image: int):
    """Slices of the batch holding about CHUNK_ELEMENTS elements of per_image each."""
    step = max(1, CHUNK_ELEMENTS // max(per_image, 1))
    return [slice(n, min(n + step, p.N)) for n in range(0, p.N, step)]


def _tap_reads(p: Conv2dProblem, r: int, s: int):
    """The padded input's rows and columns that tap (r, s) reads, output by output."""
    (sh, sw), (dh, dw_) = p.stride, p.dilation
    return (slice(r * dh, r * dh + (p.P - 1) * sh + 1, sh),
            slice(s * dw_, s * dw_ + (p.Q - 1) * sw + 1, sw))


def conv2d_fwd_chunked(p: Conv2dProblem, x, w, b=None):
    """conv2d_fwd as a sum over the taps (r, s) of one GEMM per group, w[:, :, r, s] times the
    input pixels that tap reads for every output, over a few images at a time."""
    x, w, b = _f64(x, w, b)
    xp = _padded(x, p)
    wg = w.reshape(p.groups, p.Kg, p.Cg, p.R, p.S)
    y = np.zeros(p.y_shape)
    for nb in _image_chunks(p, p.C * p.P * p.Q):
        n = nb.stop - nb.start
        yg = y[nb].reshape(n, p.groups, p.Kg, p.P * p.Q)
        for r in range(p.R):
            for s in range(p.S):
                rows, cols = _tap_reads(p, r, s)
                xs = xp[nb, :, rows, cols].reshape(n, p.groups, p.Cg, p.P * p.Q)
                yg += np.matmul(wg[:, :, :, r, s], xs)          # (n, G, Kg, P*Q)
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv2d_bwd_data_chunked(p: Conv2dProblem, dy, w):
    """conv2d_bwd_data as a sum over the taps: each adds w[:, :, r, s]^T dy to the input pixels
    that tap read, a few images at a time."""
    dy, w = _f64(dy, w)
    wt = w.reshape(p.groups, p.Kg, p.Cg, p.R, p.S).transpose(0, 2, 1, 3, 4)   # (G, Cg, Kg, R, S)
    dxp = np.zeros((p.N, p.C, p.Hp, p.Wp))
    for nb in _image_chunks(p, p.K * p.P * p.Q):
        n = nb.stop - nb.start
        dyg = dy[nb].reshape(n, p.groups, p.Kg, p.P * p.Q)
        for r in range(p.R):
            for s in range(p.S):
                rows, cols = _tap_reads(p, r, s)
                part = np.matmul(wt[:, :, :, r, s], dyg)               # (n, G, Cg, P*Q)
                dxp[nb, :, rows, cols] += part.reshape(n, p.C, p.P, p.Q)
    return _cropped(dxp, p).copy()


def conv2d_bwd_weights_chunked(p: Conv2dProblem, dy, x):
    """conv2d_bwd_weights tap by tap: dw[:, :, r, s] sums dy times the input pixels tap (r, s)
    read, a few images at a time."""
    dy, x = _f64(dy, x)
    xp = _padded(x, p)
    dw = np.zeros((p.groups, p.Kg, p.Cg, p.R, p.S))
    for nb in _image_chunks(p, p.C * p.P * p.Q):
        n = nb.stop - nb.start
        dyg = dy[nb].reshape(n, p.groups, p.Kg, p.P * p.Q)
        for r in range(p.R):
            for s in range(p.S):
                rows, cols = _tap_reads(p, r, s)
                xs = xp[nb, :, rows, cols].reshape(n, p.groups, p.Cg, p.P * p.Q)
                dw[:, :, :, r, s] += np.matmul(dyg, xs.transpose(0, 1, 3, 2)).sum(axis=0)
    return dw.reshape(p.w_shape)


# --- transposed convolution: the scatter form, stated on its own ---------------------------------
def _scatter_extent(p):
    """Rows and columns of the uncropped scatter: (H-1)*stride + dilation*(R-1) + 1, plus the
    output padding's rows that nothing reaches."""
    return tuple((n - 1) * s + d * (k - 1) + 1 + o for n, s, d, k, o in
                 zip((p.H, p.W), p.stride, p.dilation, (p.R, p.S), p.output_padding))


def _tap_patch(p, r: int, s: int):
    """Where tap (r, s) of every input pixel lands in the uncropped scatter: input pixel (i, j)
    lands on (i*sh + r*dh, j*sw + s*dw)."""
    (sh, sw), (dh, dw_) = p.stride, p.dilation
    return (slice(r * dh, r * dh + (p.H - 1) * sh + 1, sh),
            slice(s * dw_, s * dw_ + (p.W - 1) * sw + 1, sw))


def _scatter_crop(p):
    """The part of the uncropped scatter that is the output."""
    (pt, _), (pl, _) = p.padding
    return (slice(None), slice(None), slice(pt, pt + p.P), slice(pl, pl + p.Q))


def conv_transpose2d_fwd(p, x, w, b=None):
    """Each input pixel x[n, c, i, j] adds x * w[c, k, r, s] to output pixel
    (i*sh + r*dh - pad_top, j*sw + s*dw - pad_left) of every output channel k of its group;
    pixels outside the output (the padding) are dropped.

    x (N, C, H, W), w (C, K/groups, R, S), b (K,) or None -> y (N, K, P, Q).
    """
    x, w, b = _f64(x, w, b)
    full = np.zeros((p.N, p.K) + _scatter_extent(p))
    for g in range(p.groups):
        ci, ko = slice(g * p.Cg, (g + 1) * p.Cg), slice(g * p.Kg, (g + 1) * p.Kg)
        for r in range(p.R):
            for s in range(p.S):
                rows, cols = _tap_patch(p, r, s)
                full[:, ko, rows, cols] += np.einsum("nchw,ck->nkhw", x[:, ci], w[ci, :, r, s])
    y = full[_scatter_crop(p)].copy()
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv_transpose2d_bwd_data(p, dy, w):
    """dx[n, c, i, j] = sum over k, r, s of w[c, k, r, s] times dy at the output pixel that
    x[n, c, i, j]'s tap (r, s) reached (0 where that pixel was cropped off).

    dy (N, K, P, Q), w (C, K/groups, R, S) -> dx (N, C, H, W).
    """
    dy, w = _f64(dy, w)
    full = np.zeros((p.N, p.K) + _scatter_extent(p))
    full[_scatter_crop(p)] = dy
    dx = np.zeros(p.x_shape)
    for g in range(p.groups):
        ci, ko = slice(g * p.Cg, (g + 1) * p.Cg), slice(g * p.Kg, (g + 1) * p.Kg)
        for r in range(p.R):
            for s in range(p.S):
                rows, cols = _tap_patch(p, r, s)
                dx[:, ci] += np.einsum("nkhw,ck->nchw", full[:, ko, rows, cols], w[ci, :, r, s])
    return dx


def conv_transpose2d_bwd_weights(p, dy, x):
    """dw[c, k, r, s] = sum over n, i, j of x[n, c, i, j] times dy at the output pixel its tap
    (r, s) reached. dy (N, K, P, Q), x (N, C, H, W) -> dw (C, K/groups, R, S)."""
    dy, x = _f64(dy, x)
    full = np.zeros((p.N, p.K) + _scatter_extent(p))
    full[_scatter_crop(p)] = dy
    dw = np.zeros(p.w_shape)
    for g in range(p.groups):
        ci, ko = slice(g * p.Cg, (g + 1) * p.Cg), slice(g * p.Kg, (g + 1) * p.Kg)
        for r in range(p.R):
            for s in range(p.S):
                rows, cols = _tap_patch(p, r, s)
                dw[ci, :, r, s] = np.einsum("nchw,nkhw->ck", x[:, ci], full[:, ko, rows, cols])
    return dw


# --- pooling --------------------------------------------------------------------------------------
def _reads(p, axis: int, offset: int):
    """The input index each output's window reads at `offset` along axis 0 (H) or 1 (W); may lie
    in the padding (< 0 or >= the size). Windows start at -(the padding before) + i * stride."""
    n = p.P if axis == 0 else p.Q
    return np.arange(n) * p.stride[axis] - p.padding[axis][0] + offset * p.dilation[axis]


def _window_positions(p, i: int, j: int):
    """Input rows (P,) and columns (Q,) read at window offset (i, j), and whether each is inside."""
    rows, cols = _reads(p, 0, i), _reads(p, 1, j)
    rin, cin = (rows >= 0) & (rows < p.H), (cols >= 0) & (cols < p.W)
    return np.clip(rows, 0, p.H - 1), np.clip(cols, 0, p.W - 1), rin[:, None] & cin[None, :]


def _divisors(p):
    """(P, Q) divisor of each average-pooling window: its cells inside the padded input
    (count_include_pad), or inside the input itself; counted cell by cell."""
    per_axis = []
    for axis, size, k in ((0, p.H, p.kernel[0]), (1, p.W, p.kernel[1])):
        before, after = p.padding[axis]
        low, high = (-before, size + after) if p.count_include_pad else (0, size)
        per_axis.append(sum(((_reads(p, axis, t) >= low) & (_reads(p, axis, t) < high))
                            for t in range(k)))
    return np.outer(per_axis[0], per_axis[1]).astype(np.float64)


def max_pool2d_argmax(p, x):
    """(max, flat index h*W + w of the arg-max) of each window, as PyTorch picks it: the window is
    scanned in row-major order and a value replaces the running maximum when it is greater or NaN
    (so ties go to the first maximum, NaN to the last NaN). Padding is minus infinity."""
    x = np.asarray(x, dtype=np.float64)
    best = np.full(p.y_shape, -np.inf)
    idx = np.full(p.y_shape, -1, dtype=np.int64)
    for i in range(p.kernel[0]):
        for j in range(p.kernel[1]):
            rows, cols, inside = _window_positions(p, i, j)
            val = np.where(inside, x[:, :, rows][:, :, :, cols], -np.inf)
            flat = (rows[:, None] * p.W + cols[None, :]) + np.zeros(p.y_shape, np.int64)
            take = inside & ((val > best) | np.isnan(val) | (idx < 0))
            best = np.where(take, val, best)
            idx = np.where(take, flat, idx)
    return best, idx


def max_pool2d_fwd(p, x):
    """y[n, c, i, j] = max over the window of output (i, j) (padding never wins; NaN wins).

    x (N, C, H, W) -> y (N, C, P, Q).
    """
    return max_pool2d_argmax(p, x)[0]


def max_pool2d_bwd(p, dy, x):
    """dx: each dy goes to its window's arg-max (max_pool2d_argmax); overlapping windows add.

    dy (N, C, P, Q), x (N, C, H, W) -> dx (N, C, H, W).
    """
    _, idx = max_pool2d_argmax(p, x)
    dx = np.zeros((p.N, p.C, p.H * p.W))
    n, c = np.indices((p.N, p.C))
    np.add.at(dx, (n[:, :, None], c[:, :, None], idx.reshape(p.N, p.C, -1)),
              np.asarray(dy, dtype=np.float64).reshape(p.N, p.C, -1))
    return dx.reshape(p.x_shape)


def avg_pool2d_fwd(p, x):
    """y[n, c, i, j] = (sum of the window's inputs, padding counting zero) / divisor[i, j]
    (the window's cells inside the padded input, or inside the input without count_include_pad).
    x (N, C, H, W) -> y (N, C, P, Q)."""
    x = np.asarray(x, dtype=np.float64)
    total = np.zeros(p.y_shape)
    for i in range(p.kernel[0]):
        for j in range(p.kernel[1]):
            rows, cols, inside = _window_positions(p, i, j)
            total += np.where(inside, x[:, :, rows][:, :, :, cols], 0.0)
    return total / _divisors(p)


def avg_pool2d_bwd(p, dy, x=None):
    """dx: each dy / divisor spread over its window's inputs. dy (N, C, P, Q) -> dx (N, C, H, W)."""
    share = np.asarray(dy, dtype=np.float64) / _divisors(p)
    dx = np.zeros(p.x_shape)
    for i in range(p.kernel[0]):
        for j in range(p.kernel[1]):
            rows, cols, inside = _window_positions(p, i, j)
            np.add.at(dx, (slice(None), slice(None), rows[:, None], cols[None, :]),
                      np.where(inside, share, 0.0))
    return dx


# --- recurrent cells: the equations of ops.rnn, step by step --------------------------------------
def _sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))          # = 1 / (1 + exp(-a)), and never overflows


def _zeros_if_none(b, n):
    return np.zeros(n) if b is None else b


def _cell(p, gi, h, c, w_hh, b_hh):
    """One step: gi = x_t w_ih^T + b_ih, the state (h, c) -> (h', c' or None, the values the
    step's gradient needs)."""
    H = p.H
    if p.cell == "gru" and not p.linear_before_reset:      # Cho et al.: reset, then the product
        gh_rz = h @ w_hh[:2 * H].T + b_hh[:2 * H]
        r = _sigmoid(gi[:, :H] + gh_rz[:, :H])
        z = _sigmoid(gi[:, H:2 * H] + gh_rz[:, H:])
        rh = r * h
        n = np.tanh(gi[:, 2 * H:] + rh @ w_hh[2 * H:].T + b_hh[2 * H:])
        return (1 - z) * n + z * h, None, {"r": r, "z": z, "n": n, "h": h, "rh": rh}
    gh = h @ w_hh.T + b_hh
    if p.cell == "rnn_tanh":
        h_new = np.tanh(gi + gh)
        return h_new, None, {"h_new": h_new}
    if p.cell == "lstm":
        a = gi + gh
        i, f = _sigmoid(a[:, :H]), _sigmoid(a[:, H:2 * H])
        g, o = np.tanh(a[:, 2 * H:3 * H]), _sigmoid(a[:, 3 * H:])
        c_new = f * c + i * g
        return o * np.tanh(c_new), c_new, {"i": i, "f": f, "g": g, "o": o, "c": c, "c_new": c_new}
    r = _sigmoid(gi[:, :H] + gh[:, :H])
    z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    return (1 - z) * n + z * h, None, {"r": r, "z": z, "n": n, "gh_n": gh[:, 2 * H:], "h": h}


def _cell_grad(p, v, dh_new, dc_new, w_hh):
    """The chain rule through one step: d h', d c' -> (d gi, d gh, d h_prev, d c_prev or None,
    the hidden product's input for each gate row block), where gh is the hidden product
    (h w_hh^T + b_hh; for the original GRU its n rows are (r*h) w_hn^T + b_hn)."""
    H = p.H
    if p.cell == "rnn_tanh":
        da = dh_new * (1 - v["h_new"] ** 2)
        return da, da, da @ w_hh, None, None
    if p.cell == "lstm":
        i, f, g, o = v["i"], v["f"], v["g"], v["o"]
        tanh_c = np.tanh(v["c_new"])
        dc = dc_new + dh_new * o * (1 - tanh_c ** 2)         # c' reaches the loss twice
        da = np.concatenate([dc * g * i * (1 - i),           # i = sigma(a_i)
                             dc * v["c"] * f * (1 - f),      # f = sigma(a_f)
                             dc * i * (1 - g ** 2),          # g = tanh(a_g)
                             dh_new * tanh_c * o * (1 - o)],  # o = sigma(a_o)
                            axis=1)
        return da, da, da @ w_hh, dc * f, None
    r, z, n = v["r"], v["z"], v["n"]
    dn = dh_new * (1 - z)
    da_n = dn * (1 - n ** 2)
    da_z = dh_new * (v["h"] - n) * z * (1 - z)
    if not p.linear_before_reset:                            # a_n = gi_n + (r*h) w_hn^T + b_hn
        d_rh = da_n @ w_hh[2 * H:]
        da_r = d_rh * v["h"] * r * (1 - r)
        da = np.concatenate([da_r, da_z, da_n], axis=1)
        dh = da[:, :2 * H] @ w_hh[:2 * H] + d_rh * r + dh_new * z
        return da, da, dh, None, v["rh"]
    da_r = da_n * v["gh_n"] * r * (1 - r)                    # a_n = gi_n + r * gh_n
    dgh = np.concatenate([da_r, da_z, da_n * r], axis=1)
    return np.concatenate([da_r, da_z, da_n], axis=1), dgh, dgh @ w_hh + dh_new * z, None, None


def rnn_fwd(p, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """Run the cell p.cell over the sequence, one step at a time, from the last step to the first
    when p.reverse (ops.rnn has the equations).

    x (T, N, I), h0 and c0 (N, H) (c0 None unless LSTM), w_ih (G*H, I), w_hh (G*H, H),
    b_ih and b_hh (G*H,) or None -> (y (T, N, H), hT (N, H), cT (N, H) or None).
    """
    x, h, c, w_ih, w_hh, b_ih, b_hh = _f64(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    b_ih, b_hh = _zeros_if_none(b_ih, w_ih.shape[0]), _zeros_if_none(b_hh, w_ih.shape[0])
    y = np.zeros(p.y_shape)
    for t in _order(p):
        h, c, _ = _cell(p, x[t] @ w_ih.T + b_ih, h, c, w_hh, b_hh)
        y[t] = h
    return y, h, c


def _order(p):
    return range(p.T - 1, -1, -1) if p.reverse else range(p.T)


def rnn_bwd(p, dy, dhT, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """Backpropagation through time for rnn_fwd.

    dy (T, N, H) (gradient w.r.t. every output), dhT and dcT (N, H) or None (w.r.t. the final
    state), then the forward's inputs -> (dx, dh0, dc0 or None, dw_ih, dw_hh, db_ih, db_hh); the
    bias gradients are None when the layer has no bias.
    """
    dy, dhT, dcT, x, h, c, w_ih, w_hh, b_ih, b_hh = _f64(dy, dhT, dcT, x, h0, c0, w_ih, w_hh,
                                                          b_ih, b_hh)
    has_bias = b_ih is not None
    b_ih, b_hh = _zeros_if_none(b_ih, w_ih.shape[0]), _zeros_if_none(b_hh, w_ih.shape[0])
    steps, h_prev = {}, {}
    for t in _order(p):
        h_prev[t] = h
        h, c, steps[t] = _cell(p, x[t] @ w_ih.T + b_ih, h, c, w_hh, b_hh)
    dx = np.zeros(p.x_shape)
    dw_ih, dw_hh = np.zeros(w_ih.shape), np.zeros(w_hh.shape)
    db_ih, db_hh = np.zeros(w_ih.shape[0]), np.zeros(w_ih.shape[0])
    dh = np.zeros(p.h_shape) if dhT is None else dhT
    dc = (np.zeros(p.h_shape) if dcT is None else dcT) if p.has_cell_state else None
    H = p.H
    for t in reversed(_order(p)):
        dgi, dgh, dh, dc, rh = _cell_grad(p, steps[t], dy[t] + dh, dc, w_hh)
        dx[t] = dgi @ w_ih
        dw_ih += dgi.T @ x[t]
        if rh is None:
            dw_hh += dgh.T @ h_prev[t]
        else:                                      # the n rows multiply r*h, the others h
            dw_hh[:2 * H] += dgh[:, :2 * H].T @ h_prev[t]
            dw_hh[2 * H:] += dgh[:, 2 * H:].T @ rh
        db_ih += dgi.sum(axis=0)
        db_hh += dgh.sum(axis=0)
    if not has_bias:
        db_ih = db_hh = None
    return dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh
