"""torch: PyTorch as the peer users compare against (oneDNN on the CPU, cuDNN on a GPU).

Available only when torch is installed (pip install "convbench[peers]"). Runs on the CPU here;
asymmetric padding, which torch's conv2d does not take, is applied with F.pad first.
"""
from __future__ import annotations

import numpy as np

from convbench.backends.base import Backend


def _torch():
    import torch
    return torch


def _symmetric(p):
    (pt, pb), (pl, pr) = p.padding
    return (pt, pl) if (pt == pb and pl == pr) else None


class TorchBackend(Backend):
    name = "torch"
    description = "PyTorch (oneDNN on CPU), the peer"

    def unavailable_reason(self):
        try:
            _torch()
        except ImportError as e:
            return f"torch is not installed ({e}); pip install 'convbench[peers]'"
        return None

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
