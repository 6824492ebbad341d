"""numba-cuda pooling kernels, forward and backward, with PyTorch's semantics (ops.pool).

Loaded on first use (numba_cuda.KERNELS). One thread per output (forward) or input
(backward) element of flat NCHW arrays, consecutive threads on consecutive columns, so each warp
reads and writes contiguous runs; the kernels are meant to run at the memory bandwidth.

Max pooling's backward runs in two passes with no atomics: the first writes each window's
arg-max (flat h*W + w, chosen as the forward chooses it: first maximum in row-major window order,
a NaN replaces it), the second has every input element gather the gradients of the windows that
chose it. Average pooling's divisors are computed in place (count_include_pad or not).
"""
import math

from numba import cuda

from convbench.backends._numba_cuda_gemm import elementwise, launch_1d


@cuda.jit(device=True)
def _window_max(x, base, h0, w0, H, W, kh, kw, dh, dw, init):
    """(maximum, h*W + w of its position) of the window at (h0, w0); padding never wins."""
    best = init
    pos = -1
    for a in range(kh):
        h = h0 + a * dh
        if h >= 0 and h < H:
            for b in range(kw):
                w = w0 + b * dw
                if w >= 0 and w < W:
                    v = x[base + h * W + w]
                    if pos < 0 or v > best or math.isnan(v):
                        best = v
                        pos = h * W + w
    return best, pos


def _make_max_fwd(ft):
    @cuda.jit(cache=True)
    def max_fwd(x, y, total, H, W, P, Q, kh, kw, sh, sw, ph, pw, dh, dw):
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            plane = idx // (P * Q)
            ij = idx - plane * P * Q
            i = ij // Q
            best, _ = _window_max(x, plane * H * W, i * sh - ph, (ij - i * Q) * sw - pw, H, W,
                                  kh, kw, dh, dw, ft(0))
            y[idx] = best
    return max_fwd


def _make_max_argmax(ft):
    @cuda.jit(cache=True)
    def max_argmax(x, arg, total, H, W, P, Q, kh, kw, sh, sw, ph, pw, dh, dw):
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            plane = idx // (P * Q)
            ij = idx - plane * P * Q
            i = ij // Q
            _, pos = _window_max(x, plane * H * W, i * sh - ph, (ij - i * Q) * sw - pw, H, W,
                                 kh, kw, dh, dw, ft(0))
            arg[idx] = pos
    return max_argmax


def _make_max_bwd(ft):
    @cuda.jit(cache=True)
    def max_bwd(dy, arg, dx, total, H, W, P, Q, kh, kw, sh, sw, ph, pw, dh, dw):
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            plane = idx // (H * W)
            hw = idx - plane * H * W
            h = hw // W
            w = hw - h * W
            yb = plane * P * Q
            acc = ft(0)
            for a in range(kh):
                hh = h + ph - a * dh
                if hh >= 0 and hh % sh == 0 and hh // sh < P:
                    i = hh // sh
                    for b in range(kw):
                        ww = w + pw - b * dw
                        if ww >= 0 and ww % sw == 0 and ww // sw < Q:
                            o = yb + i * Q + ww // sw
                            if arg[o] == hw:
                                acc += dy[o]
            dx[idx] = acc
    return max_bwd


@cuda.jit(device=True)
def _avg_divisor(start, k, size, pad_end, include_pad):
    end = min(start + k, size + pad_end)
    if include_pad:
        return end - start
    return min(end, size) - max(start, 0)


def _make_avg_fwd(ft):
    @cuda.jit(cache=True)
    def avg_fwd(x, y, total, H, W, P, Q, kh, kw, sh, sw, ph, pw, pb, pr, include_pad):
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            plane = idx // (P * Q)
            ij = idx - plane * P * Q
            i = ij // Q
            h0 = i * sh - ph
            w0 = (ij - i * Q) * sw - pw
            base = plane * H * W
            acc = ft(0)
            for h in range(max(h0, 0), min(h0 + kh, H)):
                for w in range(max(w0, 0), min(w0 + kw, W)):
                    acc += x[base + h * W + w]
            div = (_avg_divisor(h0, kh, H, pb, include_pad)
                   * _avg_divisor(w0, kw, W, pr, include_pad))
            y[idx] = acc / ft(div)
    return avg_fwd


def _make_avg_bwd(ft):
    @cuda.jit(cache=True)
    def avg_bwd(dy, dx, total, H, W, P, Q, kh, kw, sh, sw, ph, pw, pb, pr, include_pad):
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            plane = idx // (H * W)
            hw = idx - plane * H * W
            h = hw // W
            w = hw - h * W
            yb = plane * P * Q
            acc = ft(0)
            for a in range(kh):
                hh = h + ph - a
                if hh >= 0 and hh % sh == 0 and hh // sh < P:
                    i = hh // sh
                    dvh = _avg_divisor(i * sh - ph, kh, H, pb, include_pad)
                    for b in range(kw):
                        ww = w + pw - b
                        if ww >= 0 and ww % sw == 0 and ww // sw < Q:
                            j = ww // sw
                            div = dvh * _avg_divisor(j * sw - pw, kw, W, pr, include_pad)
                            acc += dy[yb + i * Q + j] / ft(div)
            dx[idx] = acc
    return avg_bwd


def _geometry(p):
    # windows start at -(the padding before); the padding after sets P, Q and the divisors
    return (p.H, p.W, p.P, p.Q, *p.kernel, *p.stride, *p.pad_begin)


def max_pool_fwd(p, x, y, threads):
    launch_1d(elementwise("max_fwd", y.dtype, _make_max_fwd), y.size, threads, x, y, y.size,
              *_geometry(p), *p.dilation)


def max_pool_bwd(p, dy, x, dx, arg, threads):
    """arg: an int32 device array of dy's size (the arg-max of each window)."""
    geo = (*_geometry(p), *p.dilation)
    launch_1d(elementwise("max_argmax", x.dtype, _make_max_argmax), dy.size, threads,
              x, arg, dy.size, *geo)
    launch_1d(elementwise("max_bwd", dx.dtype, _make_max_bwd), dx.size, threads,
              dy, arg, dx, dx.size, *geo)


def avg_pool_fwd(p, x, y, threads):
    launch_1d(elementwise("avg_fwd", y.dtype, _make_avg_fwd), y.size, threads, x, y, y.size,
              *_geometry(p), *p.pad_end, p.count_include_pad)


def avg_pool_bwd(p, dy, dx, threads):
    launch_1d(elementwise("avg_bwd", dx.dtype, _make_avg_bwd), dx.size, threads, dy, dx,
              dx.size, *_geometry(p), *p.pad_end, p.count_include_pad)
