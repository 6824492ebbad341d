"""torch: PyTorch as the peer users compare against (oneDNN on the CPU, cuDNN on a GPU).

Available only when torch is installed (pip install "convbench[peers]"). Runs on the CPU here;
asymmetric padding, which torch's conv2d does not take, is applied with F.pad first.
"""
from __future__ import annotations

import sys

import numpy as np

from convbench.backends.base import Backend, LazyModule, package_version
from convbench.threads import get_threads

TORCH = LazyModule("torch")


def _torch():
    """torch, imported on first use (with the thread count applied)."""
    return TORCH.load()


def _symmetric(p):
    (pt, pb), (pl, pr) = p.padding
    return (pt, pl) if (pt == pb and pl == pr) else None


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

    def _args(self, p):
        sym = _symmetric(p)
        return dict(stride=p.stride, padding=sym if sym else (0, 0), dilation=p.dilation,
                    groups=p.groups), sym

    def _padded(self, x, p):
        F = _torch().nn.functional
        (pt, pb), (pl, pr) = p.padding
        return F.pad(x, (pl, pr, pt, pb))

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

    def conv2d_bwd_weights(self, p, dy, x):
        torch = _torch()
        kw, sym = self._args(p)
        with torch.inference_mode():
            xt = torch.from_numpy(x)
            if sym is None:
                xt = self._padded(xt, p)
            dw = torch.nn.grad.conv2d_weight(xt, p.w_shape, torch.from_numpy(dy), **kw)
        return dw.numpy()

    # --- pooling ----------------------------------------------------------------------------------
    def _pool_kwargs(self, p):
        kw = dict(kernel_size=p.kernel, stride=p.stride, padding=p.padding, ceil_mode=p.ceil_mode)
        if p.kind == "max":
            kw["dilation"] = p.dilation
        else:
            kw["count_include_pad"] = p.count_include_pad
        return kw

    def _pool(self, p, x):
        F = _torch().nn.functional
        fn = F.max_pool2d if p.kind == "max" else F.avg_pool2d
        return fn(x, **self._pool_kwargs(p))

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
        return m

    def _state(self, p, h0, c0):
        torch = _torch()
        h = torch.from_numpy(h0)[None]
        return (h, torch.from_numpy(c0)[None]) if p.has_cell_state else h

    def _rnn_fwd(self, p, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        torch = _torch()
        m = self._module(p, w_ih, w_hh, b_ih, b_hh)
        with torch.inference_mode():
            y, state = m(torch.from_numpy(x), self._state(p, h0, c0))
        if p.has_cell_state:
            return y.numpy(), state[0][0].numpy(), state[1][0].numpy()
        return y.numpy(), state[0].numpy(), None

    def _rnn_bwd(self, p, dy, dhT, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        torch = _torch()
        m = self._module(p, w_ih, w_hh, b_ih, b_hh)
        xt = torch.from_numpy(x).requires_grad_()
        h0t = torch.from_numpy(h0).clone()[None].requires_grad_()
        c0t = torch.from_numpy(c0).clone()[None].requires_grad_() if p.has_cell_state else None
        with torch.enable_grad():
            y, state = m(xt, (h0t, c0t) if p.has_cell_state else h0t)
            outs, grads = [y], [torch.from_numpy(dy)]
            hT = state[0] if p.has_cell_state else state
            if dhT is not None:
                outs.append(hT)
                grads.append(torch.from_numpy(dhT)[None])
            if p.has_cell_state and dcT is not None:
                outs.append(state[1])
                grads.append(torch.from_numpy(dcT)[None])
            torch.autograd.backward(outs, grads)
        g = lambda t: None if t is None or t.grad is None else t.grad.numpy()  # noqa: E731
        dbi = g(m.bias_ih_l0) if b_ih is not None else None
        dbh = g(m.bias_hh_l0) if b_ih is not None else None
        return (g(xt), h0t.grad[0].numpy(), None if c0t is None else c0t.grad[0].numpy(),
                g(m.weight_ih_l0), g(m.weight_hh_l0), dbi, dbh)

    lstm_fwd = gru_fwd = rnn_tanh_fwd = _rnn_fwd
    lstm_bwd = gru_bwd = rnn_tanh_bwd = _rnn_bwd
