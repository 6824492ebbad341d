"""The classic 3x3 filters applied with any backend, and the edge artifact of zero padding.

Each filter is a conv2d weight of shape (1, 1, 3, 3) applied to every colour channel (a depthwise
convolution with groups = channels). Zero padding darkens the border wherever the filter's weights
sum to something other than zero (blur, sharpen) and makes the Laplacian see a false edge there;
reflect padding has neither artifact.

`matrix_figure` draws one small convolution two ways: as the sparse matrix M of
`convbench.conv2d_matrix` (y = M @ x) and as im2col's column matrix (y = W @ cols).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from convbench.api import conv2d
from convbench.backends.im2col import unfold
from convbench.backends.scratch import Workspace
from convbench.ops import conv2d_problem
from convbench.ops.matrix import conv2d_matrix

FILTERS: dict[str, np.ndarray] = {
    "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
    # cross-correlation: y[i, j] = x[i, j - 1], so the picture moves one pixel to the right
    "shift right": np.array([[0, 0, 0], [1, 0, 0], [0, 0, 0]]),
    "box blur": np.ones((3, 3)) / 9.0,
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
    "laplacian edges": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]]),
}


def default_image_path() -> str:
    import matplotlib.cbook as cbook  # lazy: matplotlib loads only for images and figures
    return str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def load_image(path: str | None) -> np.ndarray:
    """An image as float32 (C, H, W) in [0, 1]."""
    import matplotlib.image as mpimg  # lazy: as above
    try:
        img = mpimg.imread(path or default_image_path())
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a file it cannot read
        raise ValueError(f"{path} is not an image matplotlib can read "
                         f"({type(e).__name__}: {e})") from None
    img = np.asarray(img, dtype=np.float32)
    if img.ndim not in (2, 3) or img.size == 0:
        raise ValueError(f"{path} is not a 2-D image (shape {img.shape})")
    if img.max() > 1.0:
        img = img / 255.0
    if img.ndim == 2:
        img = img[:, :, None]
    return np.ascontiguousarray(img[:, :, :3].transpose(2, 0, 1))


def apply_filter(img: np.ndarray, kernel: np.ndarray, padding: str = "zeros",
                 backend: str = "im2col") -> np.ndarray:
    """img (C, H, W) filtered channel by channel, output the same size.

    padding: "zeros" (conv2d's own padding=1) or "reflect" (mirror the border first).
    """
    C = img.shape[0]
    w = np.repeat(kernel.astype(img.dtype)[None, None], C, axis=0)   # (C, 1, 3, 3)
    if padding == "zeros":
        return conv2d(img[None], w, padding=1, groups=C, backend=backend)[0]
    if padding == "reflect":
        padded = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="reflect")
        return conv2d(padded[None], w, padding=0, groups=C, backend=backend)[0]
    raise ValueError(f"padding={padding!r} must be 'zeros' or 'reflect'")


def gallery(image_path: str | None, out_path: str, backend: str = "im2col", crop: int = 48) -> str:
    """Write one figure: each filter with zero and reflect padding, and a zoom on the top-left
    corner where the padding artifact shows."""
    from matplotlib.figure import Figure  # lazy: as above

    img = load_image(image_path)
    H, W = img.shape[1:]
    # zoom on the brightest corner, where zero padding's dark border shows most
    corners = {(0, 0): img[:, :crop, :crop], (0, W - crop): img[:, :crop, -crop:],
               (H - crop, 0): img[:, -crop:, :crop], (H - crop, W - crop): img[:, -crop:, -crop:]}
    r0, c0 = max(corners, key=lambda k: float(corners[k].mean()))
    zoom = (slice(None), slice(r0, r0 + crop), slice(c0, c0 + crop))
    fig = Figure(figsize=(12, 3 * len(FILTERS)))
    axes = fig.subplots(len(FILTERS), 4)
    for row, (name, kernel) in enumerate(FILTERS.items()):
        zero = apply_filter(img, kernel, "zeros", backend)
        refl = apply_filter(img, kernel, "reflect", backend)
        edges = name.startswith("laplacian")
        panels = [(zero, "zero padding"), (refl, "reflect padding"),
                  (zero[zoom], "zero padding, corner"), (refl[zoom], "reflect padding, corner")]
        for ax, (im, title) in zip(axes[row], panels):
            if edges:   # edge magnitude, scaled so the strongest 1% saturate
                mag = np.abs(im).mean(axis=0)
                shown = np.clip(mag / max(float(np.percentile(mag, 99)), 1e-6), 0, 1)
            else:
                shown = np.clip(im.transpose(1, 2, 0), 0, 1)
            ax.imshow(shown, cmap="gray" if edges else None, interpolation="nearest")
            ax.set_title(f"{name}: {title}", fontsize=9)
            ax.axis("off")
    fig.suptitle(f"3x3 filters with convbench backend '{backend}'")
    fig.tight_layout()
    fig.savefig(out_path, dpi=80)
    return out_path


def matrix_path(out_path: str) -> str:
    """Where `convbench filters --out F.png` puts the matrix figure: F-matrix.png beside it."""
    p = Path(out_path)
    return str(p.with_name(f"{p.stem}-matrix{p.suffix or '.png'}"))


def matrix_figure(out_path: str, C: int = 2, H: int = 5, K: int = 2, seed: int = 0) -> str:
    """Write one figure: a 3x3, padding-1 convolution of a (1, C, H, H) input as the sparse
    matrix M (its entries coloured by weight, so the shared weights repeat along diagonals),
    beside the same product as im2col writes it, W (K, C*9) times the column matrix
    (C*9, H*H) whose entries are copies of the input pixels (numbered 1..C*H*H)."""
    from matplotlib.figure import Figure  # heavy: only the commands that draw load it

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((K, C, 3, 3))
    p = conv2d_problem((1, C, H, H), w.shape, padding=1)
    M = conv2d_matrix(p.x_shape, w, padding=1)
    ids = np.arange(1, C * H * H + 1, dtype=np.float64).reshape(p.x_shape)
    x = rng.standard_normal(p.x_shape)
    with Workspace().lease() as ws:
        cols = unfold(ws, ids, p)[0].copy()               # (C*R*S, P*Q): pixel ids, 0 on padding
        y_cols = (w.reshape(K, -1) @ unfold(ws, x, p)[0]).ravel()
    y_matrix = M @ x.ravel()
    gap = float(np.abs(y_matrix - y_cols).max())

    fig = Figure(figsize=(14, 6.5))
    grid = fig.add_gridspec(2, 2, width_ratios=[1, 1.15], height_ratios=[1, 4])
    ax_m = fig.add_subplot(grid[:, 0])
    coo = M.tocoo()
    dense = np.full(M.shape, np.nan)                      # blank where M stores nothing
    dense[coo.row, coo.col] = coo.data
    lim = float(np.abs(w).max())
    im = ax_m.imshow(dense, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    full = M.shape[0] * M.shape[1]
    ax_m.set_title(f"y = M @ x: M is {M.shape[0]}x{M.shape[1]} sparse, {M.nnz} of {full} "
                   f"entries stored ({M.nnz / full:.0%});\nthe same {w.size} weights repeat "
                   f"along the diagonals", fontsize=9)
    ax_m.set_xlabel(f"input pixel (c, h, w): {C} channels of {H}x{H}")
    ax_m.set_ylabel(f"output (k, i, j): {K} filters")
    fig.colorbar(im, ax=ax_m, shrink=0.6, label="weight")
    ax_w = fig.add_subplot(grid[0, 1])
    ax_w.imshow(w.reshape(K, -1), cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest",
                aspect="auto")
    ax_w.set_title(f"im2col: W = w.reshape({K}, {C}*3*3), the same {w.size} weights, each once",
                   fontsize=9)
    ax_w.set_yticks(range(K))
    ax_w.set_xlabel("(c, r, s)")
    ax_c = fig.add_subplot(grid[1, 1])
    shown = np.where(cols > 0, cols, np.nan)
    ax_c.imshow(shown, cmap="viridis", interpolation="nearest", aspect="auto")
    for (r_, c_), v in np.ndenumerate(cols):
        if v > 0:
            ax_c.text(c_, r_, f"{int(v)}", ha="center", va="center", fontsize=5,
                      color="white" if v < 0.6 * cols.max() else "black")
    ax_c.set_title(f"cols ({cols.shape[0]}x{cols.shape[1]}): input pixel numbers copied in, "
                   f"blank = padding; y = W @ cols", fontsize=9)
    ax_c.set_xlabel("output position (i, j)")
    ax_c.set_ylabel("(c, r, s)")
    fig.suptitle(f"The same convolution two ways: one sparse matrix, or weights times copied "
                 f"pixels (max |M@x - W@cols| = {gap:.1e})")
    fig.tight_layout()
    fig.savefig(out_path, dpi=90)
    return out_path
