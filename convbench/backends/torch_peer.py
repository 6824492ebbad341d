"""torch: PyTorch as the peer users compare against (oneDNN on the CPU, cuDNN on a GPU).

Available only when torch is installed (pip install "convbench[peers]"). Runs on the CPU here;
asymmetric padding, which torch's conv2d does not take, is applied with F.pad first.

oneDNN skips padded taps, and torch's input gradient multiplies the zeros around a strided output
gradient by the weights, so a NaN or an infinity in the operand that meets padding or those zeros
(the weights, or the output gradient of the weight gradient) goes through `exact`, convbench's
rule for non-finite values (backends.nonfinite); finite inputs run torch as it is.
"""
from __future__ import annotations

import sys

import numpy as np

from convbench.backends.base import Backend, package_version
from convbench.backends.estimates import runtime_bytes
from convbench.backends.nonfinite import exact
from convbench.lazy import LazyModule
from convbench.memory import traced_peak
from convbench.threads import get_threads

TORCH = LazyModule("torch")


def _torch():
    """torch, imported on first use (with the thread count applied)."""
    return TORCH.load()


def _symmetric(p):
    (pt, pb), (pl, pr) = p.padding
    return (pt, pl) if (pt == pb and pl == pr) else None


def allocator_peak(prof) -> int | None:
    """The highest running sum of the allocation events (sizes, frees negative) a finished
    torch.profiler profile recorded with profile_memory=True, above its start; None where this
    torch's profiler does not expose its event tree (a private interface, hence the care)."""
    try:
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        allocation = _torch()._C._profiler._EventType.Allocation
        events = []
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if node.tag == allocation:
                events.append((node.start_time_ns, int(node.extra_fields.alloc_size)))
    except (AttributeError, RuntimeError):
        return None
    running = peak = 0
    for _, size in sorted(events):
        running += size
        peak = max(peak, running)
    return peak


class TorchBackend(Backend):
    name = "torch"
    description = "PyTorch (oneDNN on CPU), the peer"
    peer = True

    def unavailable_reason(self):
        try:
            _torch()
        except ImportError as e:
            return f"torch is not installed ({e}); pip install 'convbench[peers]'"
        return None

    def record(self):
        torch = sys.modules.get("torch")        # its threads when loaded; never imported here
        return {"version": package_version("torch"),
                "threads": torch.get_num_threads() if torch is not None else get_threads()}

    def workspace_bytes(self, op, p, dtype):
        """backends.estimates' for a runtime, except pooling, which runs here through calls
        whose allocations can be counted: torch's max pooling makes its int64 arg-max indices
        also in the forward, and padding torch does not take is a padded copy (its gradient
        too in the backward) plus, for the average, the window sums."""
        s = dtype.itemsize
        if not op.family.endswith("pool2d"):
            return runtime_bytes(op, p, s)       # an estimate (backends.estimates)
        out = p.N * p.C * p.P * p.Q
        indices = 8 * out if p.kind == "max" else 0
        padded = 0
        if not self._pool_native(p):
            ((pt, pb), (pl, pr)), (kh, kw), (sh, sw), (dh, dw) = (p.padding, p.kernel, p.stride,
                                                                  p.dilation)
            hp = max(p.H + pt + pb, (p.P - 1) * sh + dh * (kh - 1) + 1)
            wp = max(p.W + pl + pr, (p.Q - 1) * sw + dw * (kw - 1) + 1)
            padded = p.N * p.C * hp * wp * s + (out * s if p.kind == "avg" else 0)
        if op.direction == "fwd":
            return indices + padded
        return out * s + indices + 2 * padded

    def peak_bytes(self, fn):
        """What tracemalloc sees (the NumPy copies around torch) in one call plus the peak of
        torch's CPU allocator in another, read from torch.profiler's allocation events in time
        order: the sum bounds the two together from above. Two calls, because the profiler's
        own records would count in tracemalloc's peak."""
        host = traced_peak(fn)
        profiler = _torch().profiler
        with profiler.profile(activities=[profiler.ProfilerActivity.CPU],
                              profile_memory=True) as prof:
            fn()
        torch_peak = allocator_peak(prof)
        return None if torch_peak is None else host + torch_peak

    def _args(self, p):
        sym = _symmetric(p)
        return dict(stride=p.stride, padding=sym if sym else (0, 0), dilation=p.dilation,
                    groups=p.groups), sym

    def _padded(self, x, p):
        F = _torch().nn.functional
        (pt, pb), (pl, pr) = p.padding
        return F.pad(x, (pl, pr, pt, pb))

    @exact("fwd", check=(1,))
    def conv2d_fwd(self, p, x, w, b):
        torch = _torch()
        kw, sym = self._args(p)
        with torch.inference_mode():
            xt = torch.from_numpy(x)
            if sym is None:
                xt = self._padded(xt, p)
            y = torch.nn.functional.conv2d(xt, torch.from_numpy(w),
                                           None if b is None else torch.from_numpy(b), **kw)
        return y.numpy()

    @exact("bwd-data", check=(1,))
    def conv2d_bwd_data(self, p, dy, w):
        torch = _torch()
        kw, sym = self._args(p)
        shape = p.x_shape if sym else (p.N, p.C, p.Hp, p.Wp)
        with torch.inference_mode():
            dx = torch.nn.grad.conv2d_input(shape, torch.from_numpy(w), torch.from_numpy(dy), **kw)
        if sym is None:
            (pt, _), (pl, _) = p.padding
            dx = dx[:, :, pt:pt + p.H, pl:pl + p.W].contiguous()
        return dx.numpy()

    @exact("bwd-weights", check=(0,))
    def conv2d_bwd_weights(self, p, dy, x):
        torch = _torch()
        kw, sym = self._args(p)
        with torch.inference_mode():
            xt = torch.from_numpy(x)
            if sym is None:
                xt = self._padded(xt, p)
            dw = torch.nn.grad.conv2d_weight(xt, p.w_shape, torch.from_numpy(dy), **kw)
        return dw.numpy()

    # --- transposed convolution: torch's own forward; the gradients through the convolution
    # kernels above (backends.lowering), which is what torch's autograd runs for them -----------
    @exact("bwd-data", check=(1,))        # a transposed convolution is an input gradient
    def conv_transpose2d_fwd(self, p, x, w, b):
        torch = _torch()
        F = torch.nn.functional
        # torch takes padding p on both sides and output_padding o: the far crop is p - o
        (pt, pb), (pl, pr) = p.padding
        out_pad = (pt - pb + p.output_padding[0], pl - pr + p.output_padding[1])
        native = all(0 <= o < max(s, d) for o, s, d in zip(out_pad, p.stride, p.dilation))
        kw = dict(stride=p.stride, groups=p.groups, dilation=p.dilation,
                  padding=(pt, pl) if native else 0,
                  output_padding=out_pad if native else p.output_padding)
        with torch.inference_mode():
            y = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w),
                                   None if b is None else torch.from_numpy(b), **kw)
            if not native:
                y = y[:, :, pt:pt + p.P, pl:pl + p.Q].contiguous()
        return y.numpy()

    # --- pooling ----------------------------------------------------------------------------------
    def _pool_native(self, p):
        """torch's own pooling takes symmetric padding of at most half the kernel."""
        sym = p.symmetric_padding
        return sym is not None and all(q <= k // 2 for q, k in zip(sym, p.kernel))

    def _pool(self, p, x):
        F = _torch().nn.functional
        if self._pool_native(p):
            kw = dict(kernel_size=p.kernel, stride=p.stride, padding=p.symmetric_padding,
                      ceil_mode=p.ceil_mode)
            if p.kind == "max":
                return F.max_pool2d(x, dilation=p.dilation, **kw)
            return F.avg_pool2d(x, count_include_pad=p.count_include_pad, **kw)
        return self._pool_padded(p, x)

    def _pool_padded(self, p, x):
        """Padding torch's pooling does not take, applied with F.pad: minus infinity for the
        maximum, zeros for the average, plus room on the bottom/right for ceil_mode's last window
        (so torch pools in floor mode and gives our P, Q). The average's divisors, which depend
        on where each window sits (count_include_pad), come from pooling an indicator of the
        counted cells with the same windows."""
        torch = _torch()
        F = torch.nn.functional
        ((pt, pb), (pl, pr)), (kh, kw), (sh, sw), (dh, dw) = (p.padding, p.kernel, p.stride,
                                                              p.dilation)
        eh = max(0, (p.P - 1) * sh + dh * (kh - 1) + 1 - (p.H + pt + pb))
        ew = max(0, (p.Q - 1) * sw + dw * (kw - 1) + 1 - (p.W + pl + pr))
        pads = (pl, pr + ew, pt, pb + eh)
        if p.kind == "max":
            xp = F.pad(x, pads, value=float("-inf"))
            return F.max_pool2d(xp, p.kernel, p.stride, 0, p.dilation)
        sums = F.avg_pool2d(F.pad(x, pads), p.kernel, p.stride, 0, divisor_override=1)
        counted = torch.ones((1, 1, p.H, p.W), dtype=x.dtype)
        if p.count_include_pad:       # the padded input counts, ceil_mode's extra room does not
            counted = F.pad(counted, (pl, pr, pt, pb), value=1.0)
            counted = F.pad(counted, (0, ew, 0, eh))
        else:
            counted = F.pad(counted, pads)
        divisors = F.avg_pool2d(counted, p.kernel, p.stride, 0, divisor_override=1)
        return sums / divisors

    def _pool_fwd(self, p, x):
        torch = _torch()
        with torch.inference_mode():
            return self._pool(p, torch.from_numpy(x)).numpy()

    def _pool_bwd(self, p, dy, x):
        torch = _torch()
        xt = torch.from_numpy(x).requires_grad_()
        with torch.enable_grad():
            self._pool(p, xt).backward(torch.from_numpy(dy))
        return xt.grad.numpy()

    max_pool2d_fwd = avg_pool2d_fwd = _pool_fwd
    max_pool2d_bwd = avg_pool2d_bwd = _pool_bwd

    # --- recurrent cells: torch.nn.LSTM/GRU/RNN with the weights copied in -----------------------
    # A reversed layer runs on the time-flipped sequence (torch's own bidirectional layers do the
    # same). torch.nn.GRU is the linear_before_reset=True GRU only; the original GRU is written
    # here with torch's operations, step by step, as a torch user would, with autograd for its
    # backward.
    def _module(self, p, w_ih, w_hh, b_ih, b_hh):
        torch = _torch()
        cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}[p.cell]
        m = cls(p.I, p.H, bias=b_ih is not None)
        m = m.to(torch.float64 if w_ih.dtype == np.float64 else torch.float32)
        with torch.no_grad():
            m.weight_ih_l0.copy_(torch.from_numpy(w_ih))
            m.weight_hh_l0.copy_(torch.from_numpy(w_hh))
            if b_ih is not None:
                m.bias_ih_l0.copy_(torch.from_numpy(b_ih))
                b_hh = b_hh if b_hh is not None else np.zeros_like(b_ih)
                m.bias_hh_l0.copy_(torch.from_numpy(b_hh))
        names = ["weight_ih_l0", "weight_hh_l0"] + (["bias_ih_l0", "bias_hh_l0"]
                                                    if b_ih is not None else [])
        return (lambda x, state: m(x, state)), [getattr(m, n) for n in names]

    def _original_gru(self, p, w_ih, w_hh, b_ih, b_hh, grad: bool):
        torch = _torch()
        params = [torch.from_numpy(a).clone().requires_grad_(grad)
                  for a in (w_ih, w_hh) + ((b_ih, b_hh) if b_ih is not None else ())]
        H = p.H

        def run(x, h):
            w_i, w_h = params[0], params[1]
            b_i, b_h = (params[2], params[3]) if len(params) == 4 else (0, torch.zeros(3 * H,
                                                                                      dtype=x.dtype))
            gi = x @ w_i.T + b_i
            h = h[0]
            ys = []
            for t in range(p.T):
                rz = torch.sigmoid(gi[t, :, :2 * H] + h @ w_h[:2 * H].T + b_h[:2 * H])
                r, z = rz[:, :H], rz[:, H:]
                n = torch.tanh(gi[t, :, 2 * H:] + (r * h) @ w_h[2 * H:].T + b_h[2 * H:])
                h = (1 - z) * n + z * h
                ys.append(h)
            return torch.stack(ys), h[None]
        return run, params

    def _layer(self, p, w_ih, w_hh, b_ih, b_hh, grad: bool = False):
        """(run(x, state) -> (y, state) in torch.nn's shapes, its parameter tensors)."""
        if p.original_gru:
            run, params = self._original_gru(p, w_ih, w_hh, b_ih, b_hh, grad)
        else:
            run, params = self._module(p, w_ih, w_hh, b_ih, b_hh)
        if not p.reverse:
            return run, params

        def reversed_run(x, state):
            y, state = run(x.flip(0), state)
            return y.flip(0), state
        return reversed_run, params

    def _state(self, p, h0, c0):
        torch = _torch()
        h = torch.from_numpy(h0)[None]
        return (h, torch.from_numpy(c0)[None]) if p.has_cell_state else h

    def _rnn_fwd(self, p, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        torch = _torch()
        run, _ = self._layer(p, w_ih, w_hh, b_ih, b_hh)
        with torch.inference_mode():
            y, state = run(torch.from_numpy(x), self._state(p, h0, c0))
        if p.has_cell_state:
            return y.numpy(), state[0][0].numpy(), state[1][0].numpy()
        return y.numpy(), state[0].numpy(), None

    def _rnn_bwd(self, p, dy, dhT, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        torch = _torch()
        run, params = self._layer(p, w_ih, w_hh, b_ih, b_hh, grad=True)
        xt = torch.from_numpy(x).requires_grad_()
        h0t = torch.from_numpy(h0).clone()[None].requires_grad_()
        c0t = torch.from_numpy(c0).clone()[None].requires_grad_() if p.has_cell_state else None
        with torch.enable_grad():
            y, state = run(xt, (h0t, c0t) if p.has_cell_state else h0t)
            outs, grads = [y], [torch.from_numpy(dy)]
            hT = state[0] if p.has_cell_state else state
            if dhT is not None:
                outs.append(hT)
                grads.append(torch.from_numpy(dhT)[None])
            if p.has_cell_state and dcT is not None:
                outs.append(state[1])
                grads.append(torch.from_numpy(dcT)[None])
            torch.autograd.backward(outs, grads)
        g = [None if t.grad is None else t.grad.numpy() for t in params]
        dbi, dbh = (g[2], g[3]) if b_ih is not None else (None, None)
        return (xt.grad.numpy(), h0t.grad[0].numpy(),
                None if c0t is None else c0t.grad[0].numpy(), g[0], g[1], dbi, dbh)

    lstm_fwd = gru_fwd = rnn_tanh_fwd = _rnn_fwd
    lstm_bwd = gru_bwd = rnn_tanh_bwd = _rnn_bwd
