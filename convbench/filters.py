"""The classic 3x3 filters applied with any backend, and the edge artifact of zero padding.

Each filter is a conv2d weight of shape (1, 1, 3, 3) applied to every colour channel (a depthwise
convolution with groups = channels). Zero padding darkens the border wherever the filter's weights
sum to something other than zero (blur, sharpen) and makes the Laplacian see a false edge there;
reflect padding has neither artifact.
"""
from __future__ import annotations

import numpy as np

from convbench.api import conv2d

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
    img = mpimg.imread(path or default_image_path())
    img = np.asarray(img, dtype=np.float32)
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
