"""What a trained network learned: its first-layer filters against the classic 3x3 filters,
every conv layer's feature maps for one test image, images that maximise a channel, translation
equivariance on a shifted digit, and parameter counts against dense layers.

    from convbench.train.inspection import inspect_checkpoint
    result = inspect_checkpoint("runs/train/best.npz", "runs/train/inspect")

writes PNGs and inspect.json into the out directory and the run's index.html (see run_index).

Filter similarity is the cosine of the angle between the 9 taps of a learned filter and of a
classic one (a correlation about zero, not about the mean): Pearson's correlation subtracts the
mean, which leaves the box blur (nine equal taps) nothing to correlate with. It is sign-aware:
-1 is the negated classic filter, and the best match is the largest signed value. For filters
over several input channels the taps are averaged over the channels first.

A channel's activation is its ReLU'd output at the centre unit (row P//2, column Q//2 of its
map): one unit, whose receptive field grows with depth. The maximising images climb that unit's
pre-ReLU output (the same quantity where it is positive, with a gradient everywhere): gradient
ascent on the input through the layers' own backward passes (convbench's conv and pooling
kernels), the gradient scaled to unit RMS per image, minus a small L2 penalty on the image
(pulling it towards the data's mean, 0 after normalisation), with a random shift (jitter) of up
to one pixel in each of the first three quarters of the steps, and pixels kept inside the
data's range. inspect.json compares the activation reached with the mean (and the largest)
activation of the same unit on the test images.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convbench.filters import FILTERS
from convbench.train import data as datasets
from convbench.train.layers import Conv2d, Layer, Linear, ResidualBlock
from convbench.train.model import Sequential, build_model
from convbench.train.run_index import write_index
from convbench.train.trainer import load_checkpoint

SIMILARITY = ("cosine similarity of the 9 taps (correlation about zero, sign-aware: -1 is the "
              "negated filter); best match = largest signed value")
SHIFT = (1, 2)        # rows, columns of the equivariance figure


@dataclass
class ConvTap:
    """A conv layer, the layers from the model's input to its output, and the shapes (one
    sample) of the model's input and of the conv's input and output."""
    name: str
    conv: Conv2d
    chain: list[Layer]
    image_shape: tuple
    in_shape: tuple
    out_shape: tuple = field(init=False)

    def __post_init__(self):
        self.out_shape = self.conv.out_shape(self.in_shape)


def conv_taps(model: Sequential) -> list[ConvTap]:
    """Every conv layer of the model (those inside residual blocks too), in forward order."""
    taps, prefix, shape = [], [], model.in_shape
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Conv2d):
            taps.append(ConvTap(f"{i}: conv {layer.cin}->{layer.cout}", layer, prefix + [layer],
                                model.in_shape, shape))
        elif isinstance(layer, ResidualBlock):
            c1, c2 = layer.conv1, layer.conv2
            taps.append(ConvTap(f"{i}.conv1: {c1.cin}->{c1.cout}", c1, prefix + [c1],
                                model.in_shape, shape))
            taps.append(ConvTap(f"{i}.conv2: {c2.cin}->{c2.cout}", c2,
                                prefix + [c1, layer.relu1, c2], model.in_shape,
                                c1.out_shape(shape)))
            if layer.proj is not None:
                taps.append(ConvTap(f"{i}.proj: {c1.cin}->{c1.cout} 1x1", layer.proj,
                                    prefix + [layer.proj], model.in_shape, shape))
        prefix.append(layer)
        shape = layer.out_shape(shape)
    return taps


def _forward(chain, x):
    for layer in chain:
        x = layer.forward(x, False)
    return x


def _backward(chain, d):
    for layer in reversed(chain):
        d = layer.backward(d)
    return d


def _in_batches(chain, x, batch=256):
    return np.concatenate([_forward(chain, x[i:i + batch]) for i in range(0, len(x), batch)])


def centre(shape) -> tuple[int, int]:
    """The output position whose unit the maximising images drive: the middle of (.., P, Q)."""
    return shape[-2] // 2, shape[-1] // 2


def unit_activation(y: np.ndarray) -> np.ndarray:
    """(N, K, P, Q) conv outputs -> (N, K): each channel's ReLU'd output at the centre unit."""
    i, j = centre(y.shape)
    return np.maximum(y[:, :, i, j], 0).astype(np.float64)


# --- filters ----------------------------------------------------------------------------------
def filter_similarity(w: np.ndarray) -> dict[str, np.ndarray]:
    """w (K, C, 3, 3) -> {classic filter name: (K,) cosine similarities} (see the module doc)."""
    if w.shape[2:] != (3, 3):
        raise ValueError(f"filter_similarity needs 3x3 filters, got shape {w.shape}")
    taps = w.mean(axis=1).reshape(len(w), 9).astype(np.float64)
    norms = np.linalg.norm(taps, axis=1)
    out = {}
    for name, f in FILTERS.items():
        f = np.asarray(f, np.float64).ravel()
        out[name] = taps @ f / np.maximum(norms * np.linalg.norm(f), 1e-30)
    return out


def match_filters(w: np.ndarray) -> list[dict]:
    """For each filter: the classic filter it resembles best and all similarities."""
    sims = filter_similarity(w)
    names = list(sims)
    table = np.stack([sims[n] for n in names], axis=1)          # (K, classic)
    return [{"filter": k, "best": names[int(np.argmax(row))], "similarity": float(row.max()),
             "all": {n: float(v) for n, v in zip(names, row)}} for k, row in enumerate(table)]


# --- images that maximise a channel ------------------------------------------------------------
def ascent_gradient(tap: ConvTap, x: np.ndarray, channels) -> tuple[np.ndarray, np.ndarray]:
    """(objective per image, its gradient w.r.t. x): the pre-ReLU output of channels[n] at the
    centre unit for image n, through the chain's backward passes."""
    y = _forward(tap.chain, x)
    n = np.arange(len(x))
    i, j = centre(y.shape)
    d = np.zeros_like(y)
    d[n, channels, i, j] = 1
    return y[n, channels, i, j].astype(np.float64), _backward(tap.chain, d)


def maximise(tap: ConvTap, channels, lo: float, hi: float, rng, steps: int = 200,
             lr: float = 0.05, l2: float = 0.3, jitter: int = 1) -> np.ndarray:
    """Images (len(channels), C, H, W) that maximise each channel's centre unit of tap (see the
    module doc). lr is the step as a fraction of the pixel range [lo, hi]; l2 weighs the penalty
    0.5 * l2 * |x|^2 against the activation's gradient scaled to unit RMS."""
    shape = (len(channels),) + tuple(tap.image_shape)
    x = (0.05 * (hi - lo) * rng.standard_normal(shape)).astype(np.float32).clip(lo, hi)
    step = np.float32(lr * (hi - lo))
    for t in range(steps):
        # jitter while the pattern forms; the last quarter settles it at the unit's own alignment
        reach = jitter if t < 0.75 * steps else 0
        sh = tuple(int(v) for v in rng.integers(-reach, reach + 1, size=2))
        _, g = ascent_gradient(tap, np.ascontiguousarray(np.roll(x, sh, axis=(2, 3))), channels)
        g = np.roll(g, (-sh[0], -sh[1]), axis=(2, 3))
        rms = np.sqrt((g.astype(np.float64) ** 2).mean(axis=(1, 2, 3), keepdims=True))
        g = (g / np.maximum(rms, 1e-30)).astype(np.float32) - np.float32(l2) * x
        decay = np.float32(1 - 0.9 * t / steps)     # smaller steps at the end settle the image
        x = np.clip(x + step * decay * g, lo, hi).astype(np.float32)
    return x


# --- parameter counts ---------------------------------------------------------------------------
def parameter_counts(model: Sequential) -> list[dict]:
    """Per layer with parameters: its count, and for a conv layer the count of a dense layer
    from the same input to the same output (weights plus one bias per output)."""
    rows = []
    taps = {id(t.conv): t for t in conv_taps(model)}
    shape = model.in_shape
    for i, layer in enumerate(model.layers):
        parts = layer.parts if isinstance(layer, ResidualBlock) else [layer]
        for part in parts:
            if isinstance(part, Conv2d):
                t = taps[id(part)]
                n_in, n_out = int(np.prod(t.in_shape)), int(np.prod(t.out_shape))
                own = int(part.w.size + part.b.size)
                dense = n_in * n_out + n_out
                rows.append({"layer": t.name, "kind": "conv", "in": list(t.in_shape),
                             "out": list(t.out_shape), "params": own, "dense_params": dense,
                             "fewer_than_dense": dense - own, "dense_over_conv": dense / own})
            elif isinstance(part, Linear):
                own = int(part.w.size + part.b.size)
                rows.append({"layer": f"{i}: linear {part.fin}->{part.fout}", "kind": "linear",
                             "in": [part.fin], "out": [part.fout], "params": own,
                             "dense_params": own, "fewer_than_dense": 0, "dense_over_conv": 1.0})
        shape = layer.out_shape(shape)
    return rows


# --- figures ------------------------------------------------------------------------------------
def _figure(size):
    from matplotlib.figure import Figure  # heavy: loaded only when drawing
    return Figure(figsize=size)


def _sym(a):
    return float(np.abs(a).max()) or 1.0


def plot_filters(path, w, matches):
    K = len(w)
    per_row = 4
    rows = -(-K // per_row)
    fig = _figure((2.9 * per_row, 1.45 * rows + 0.6))
    # each pair: learned, classic, then a narrow empty column to separate the pairs
    axes = fig.subplots(rows, 3 * per_row, squeeze=False,
                        gridspec_kw={"width_ratios": [1, 1, 0.35] * per_row})
    for ax in axes.ravel():
        ax.axis("off")
    for k, m in enumerate(matches):
        r, c = divmod(k, per_row)
        learned = w[k].mean(axis=0)
        classic = np.asarray(FILTERS[m["best"]], np.float64)
        axes[r, 3 * c].imshow(learned, cmap="RdBu_r", vmin=-_sym(learned), vmax=_sym(learned))
        axes[r, 3 * c].set_title(f"filter {k}", fontsize=8)
        axes[r, 3 * c + 1].imshow(classic, cmap="RdBu_r", vmin=-_sym(classic), vmax=_sym(classic))
        axes[r, 3 * c + 1].set_title(f"{m['best']}\nr = {m['similarity']:.2f}", fontsize=8)
    fig.suptitle("First-layer filters (red +, blue -, each on its own scale) beside the classic "
                 "3x3 filter each matches best\n(r: cosine similarity of the 9 taps)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def plot_feature_maps(path, image, label, maps):
    """maps: [(tap name, (K, P, Q) output)]: every channel of every conv layer."""
    per_row = 16
    heights = [1.6] + [0.75 * -(-m.shape[0] // per_row) + 0.3 for _, m in maps]
    fig = _figure((per_row * 0.75, sum(heights)))
    fig.set_layout_engine("constrained")
    subs = fig.subfigures(len(heights), 1, height_ratios=heights)
    ax = subs[0].subplots()
    ax.imshow(image.mean(axis=0), cmap="gray")
    ax.set_title(f"test image (label {label}); below, every output channel of each conv layer "
                 f"before its ReLU (red +, blue -, one scale per layer)", fontsize=9)
    ax.axis("off")
    for sub, (name, m) in zip(subs[1:], maps):
        rows = -(-m.shape[0] // per_row)
        axes = sub.subplots(rows, per_row, squeeze=False)
        lim = _sym(m)
        for k, a in enumerate(axes.ravel()):
            a.axis("off")
            if k < len(m):
                a.imshow(m[k], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        sub.suptitle(f"layer {name}: {m.shape[0]} channels of {m.shape[1]}x{m.shape[2]}",
                     fontsize=9)
    fig.savefig(path, dpi=80)


def plot_maximising(path, rows, lo, hi):
    """rows: [(tap name, images (n, C, H, W), [record per image])]."""
    n = max(len(r[1]) for r in rows)
    fig = _figure((1.5 * n + 1.2, 1.85 * len(rows) + 0.6))
    fig.set_layout_engine("constrained")
    axes = fig.subplots(len(rows), n, squeeze=False)
    for i, (name, images, recs) in enumerate(rows):
        for j, a in enumerate(axes[i]):
            a.set_xticks([])
            a.set_yticks([])
            if j >= len(images):
                a.axis("off")
                continue
            a.imshow(images[j].mean(axis=0), cmap="gray", vmin=lo, vmax=hi)
            ratio = recs[j]["ratio_to_mean"]
            a.set_title(f"ch {recs[j]['channel']}: "
                        + (f"{ratio:.1f}x mean" if ratio is not None else "dead on test"),
                        fontsize=8)
        axes[i, 0].set_ylabel(name, fontsize=8)
    fig.suptitle("Images that maximise a channel's centre unit, one row per conv layer\n"
                 "(title: activation reached / its mean on the test images)", fontsize=10)
    fig.savefig(path, dpi=80)


def plot_equivariance(path, image, shifted, fmap, fmap_shifted, diff, interior, channel, name):
    from matplotlib.patches import Rectangle  # heavy: loaded only when drawing

    fig = _figure((13, 3.0))
    axes = fig.subplots(1, 5)
    lim = max(_sym(fmap), _sym(fmap_shifted))
    panels = [(image, "digit", "gray", None), (shifted, f"shifted by {SHIFT}", "gray", None),
              (fmap, f"feature map (ch {channel})", "RdBu_r", lim),
              (fmap_shifted, "feature map of the shifted digit", "RdBu_r", lim),
              (diff, "|shift(map) - map(shift)|\ninterior boxed", "magma", None)]
    for a, (img, title, cmap, span) in zip(axes, panels):
        kw = dict(vmin=-span, vmax=span) if span else {}
        a.imshow(img, cmap=cmap, interpolation="nearest", **kw)
        a.set_title(title, fontsize=9)
        a.set_xticks([])
        a.set_yticks([])
    (r0, r1), (c0, c1) = interior
    axes[4].add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, ec="cyan",
                                lw=2))
    fig.suptitle(f"Translation equivariance of layer {name}: shift the input, the feature map "
                 f"shifts with it (max interior difference {float(diff[r0:r1, c0:c1].max()):.1e})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


# --- the whole inspection ----------------------------------------------------------------------
def _load(checkpoint, backend):
    """(model on `backend`, config, normalised test images, labels, pixel range)."""
    loaded, cfg, _, _, (mean, std) = load_checkpoint(checkpoint)
    ds = datasets.load(cfg.data)
    model = build_model(cfg.model, ds.x.shape[1:], ds.classes, backend, cfg.init, cfg.dropout,
                        cfg.seed)
    for p, q in zip(model.params, loaded.params):
        p[...] = q
    for layer in model.layers:              # the ascent needs every input gradient
        layer.need_input_grad = True
    _, _, te = datasets.split(ds, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    if not len(te):
        te = np.arange(len(ds))
    x = ((ds.x[te] - mean) / std).astype(np.float32)
    lo, hi = float((ds.x.min() - mean) / std), float((ds.x.max() - mean) / std)
    return model, cfg, x, ds.y[te], (lo, hi)


def _shift(x, shift, fill):
    """x (C, H, W) moved down/right by shift (non-negative), the gap filled with `fill`."""
    out = np.full_like(x, fill)
    r, c = shift
    out[:, r:, c:] = x[:, :x.shape[1] - r, :x.shape[2] - c]
    return out


def inspect_checkpoint(checkpoint, out_dir=None, *, image_index: int = 0, channels: int = 6,
                       steps: int = 200, backend: str = "im2col", seed: int = 0,
                       log=None) -> dict:
    """Write the figures and inspect.json for a checkpoint into out_dir (default: inspect/
    beside it) and update the run's index.html. Returns what inspect.json holds."""
    checkpoint = Path(checkpoint)
    out = Path(out_dir) if out_dir is not None else checkpoint.parent / "inspect"
    for name, v, low in (("channels", channels, 1), ("steps", steps, 1)):
        if not isinstance(v, int) or v < low:
            raise ValueError(f"{name}={v!r} must be an int >= {low}")
    model, cfg, x, y, (lo, hi) = _load(checkpoint, backend)
    if not 0 <= image_index < len(x):
        raise ValueError(f"image_index={image_index} must be in [0, {len(x)})")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    taps = conv_taps(model)
    figures = []

    # learned first-layer filters against the classic ones
    w1 = taps[0].conv.w
    matches = match_filters(w1) if w1.shape[2:] == (3, 3) else []
    if matches:
        plot_filters(out / "filters.png", w1, matches)
        figures.append({"file": "filters.png", "title": "Learned first-layer filters",
                        "caption": "Each learned filter beside the classic 3x3 filter it matches "
                                   f"best; r is the {SIMILARITY}."})

    # feature maps of one test image, every conv layer
    img = x[image_index:image_index + 1]
    maps = [(t.name, _forward(t.chain, img)[0]) for t in taps]
    plot_feature_maps(out / "feature_maps.png", x[image_index], int(y[image_index]), maps)
    figures.append({"file": "feature_maps.png", "title": "Feature maps",
                    "caption": f"Test image {image_index} (label {int(y[image_index])}) and every "
                               "output channel of every conv layer, before the ReLU."})

    # translation equivariance on the first conv layer
    t0 = taps[0]
    ch = int(np.argmax(np.abs(maps[0][1]).sum(axis=(1, 2))))
    shifted = _shift(x[image_index], SHIFT, lo)
    f_plain = _forward(t0.chain, img)[0, ch]
    f_shift = _forward(t0.chain, shifted[None])[0, ch]
    moved = np.zeros_like(f_plain)
    P, Q = f_plain.shape
    moved[SHIFT[0]:, SHIFT[1]:] = f_plain[:P - SHIFT[0], :Q - SHIFT[1]]
    diff = np.abs(moved - f_shift)
    # interior: outputs whose receptive field (3x3, padding 1) misses the padding and the fill
    reach = t0.conv.k // 2
    interior = ((SHIFT[0] + reach, P - reach), (SHIFT[1] + reach, Q - reach))
    (r0, r1), (c0, c1) = interior
    equi_gap = float(diff[r0:r1, c0:c1].max())
    plot_equivariance(out / "equivariance.png", x[image_index].mean(axis=0),
                      shifted.mean(axis=0), f_plain, f_shift, diff, interior, ch, t0.name)
    figures.append({"file": "equivariance.png", "title": "Translation equivariance",
                    "caption": f"The digit shifted by {SHIFT} (rows, columns) gives the feature "
                               f"map shifted by the same amount: the largest difference inside "
                               f"the interior (boxed) is {equi_gap:.1e}, at most float32 "
                               "rounding. At the border the padding and the shifted-in "
                               "background differ."})

    # images that maximise channels of every conv layer
    max_rows, layers = [], []
    for t in taps:
        act = unit_activation(_in_batches(t.chain, x))            # (N test, K)
        mean_act, max_act = act.mean(axis=0), act.max(axis=0)
        chosen = [int(c) for c in np.argsort(-mean_act, kind="stable")[:channels]]
        images = maximise(t, chosen, lo, hi, rng, steps)
        reached = unit_activation(_forward(t.chain, images))[np.arange(len(chosen)), chosen]
        recs = []
        for c, a in zip(chosen, reached):
            m, mx = float(mean_act[c]), float(max_act[c])
            recs.append({"channel": c, "activation": float(a), "test_mean": m, "test_max": mx,
                         "ratio_to_mean": float(a) / m if m > 0 else None,
                         "ratio_to_max": float(a) / mx if mx > 0 else None})
        ratios = [r["ratio_to_mean"] for r in recs if r["ratio_to_mean"] is not None]
        layers.append({"layer": t.name, "images": recs,
                       "median_ratio_to_mean": float(np.median(ratios)) if ratios else None,
                       "median_ratio_to_max": float(np.median(
                           [r["ratio_to_max"] for r in recs if r["ratio_to_max"] is not None]))
                       if ratios else None})
        max_rows.append((t.name, images, recs))
        if log:
            log(f"  {t.name}: maximising images reach {layers[-1]['median_ratio_to_mean']:.2f}x "
                f"the test mean activation (median of {len(recs)} channels)")
    plot_maximising(out / "maximising.png", max_rows, lo, hi)
    figures.append({"file": "maximising.png", "title": "Images that maximise a channel",
                    "caption": f"Gradient ascent on the input ({steps} steps, jitter, L2 penalty, "
                               "pixels kept in the data's range) through the layers' backward "
                               "passes on convbench's kernels, for the channels of each conv "
                               "layer most active on the test images. Each image drives the "
                               "channel's centre unit, whose receptive field grows with depth; "
                               "the title is the activation it reaches over that unit's mean "
                               "activation on the test images."})

    result = {
        "checkpoint": str(checkpoint), "model": cfg.model, "data": cfg.data, "backend": backend,
        "test_images": int(len(x)),
        "similarity": SIMILARITY,
        "filters": matches,
        "filter_best_counts": {n: sum(m["best"] == n for m in matches) for n in FILTERS},
        "filter_similarity_median": float(np.median([m["similarity"] for m in matches]))
        if matches else None,
        "feature_maps": {"image_index": image_index, "label": int(y[image_index]),
                         "layers": [{"layer": n, "shape": list(m.shape)} for n, m in maps]},
        "equivariance": {"layer": t0.name, "channel": ch, "shift": list(SHIFT),
                         "interior_rows": list(interior[0]), "interior_cols": list(interior[1]),
                         "max_interior_difference": equi_gap,
                         "max_feature": float(np.abs(f_plain).max())},
        "activation": "the channel's ReLU'd output at the centre unit (row P//2, column Q//2)",
        "maximising": {"steps": steps, "layers": layers},
        "params": parameter_counts(model),
        "figures": figures,
    }
    (out / "inspect.json").write_text(json.dumps(result, indent=1))
    run_dir = checkpoint.parent
    page_dir = run_dir if out.resolve().is_relative_to(run_dir.resolve()) else out
    result["index"] = str(write_index(page_dir))
    return result
