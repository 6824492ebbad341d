"""Mini-batch training with validation, early stopping, checkpoints, logs and plots.

A run writes to its out directory: best.npz (the checkpoint at the best validation loss; on Ctrl-C
also interrupted.npz), log.csv (one row per epoch), curves.png, summary.json (test_accuracy,
best_epoch, epochs_run, seconds, and the backend chosen for each layer and direction) and
index.html (one page for the run; `convbench inspect` adds its figures to it).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from convbench.backends import get_backend
from convbench.train import data as datasets
from convbench.train.layers import softmax_cross_entropy
from convbench.train.model import build_model
from convbench.train.optim import OPTIMIZERS, LRSchedule, make_optimizer
from convbench.train.run_index import write_index


@dataclass
class TrainConfig:
    data: str = "digits"
    model: str = "small-cnn"
    optimizer: str = "adam"
    lr: float = 2e-3
    momentum: float | None = None
    weight_decay: float = 0.0
    epochs: int = 30
    batch_size: int = 64
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    patience: int = 6
    augment: bool = True
    dropout: float = 0.25
    schedule: str = "cosine"
    backend: str = "auto"
    init: str = "he_uniform"

    def validate(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} must be one of {', '.join(OPTIMIZERS)}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr={self.lr!r} must be > 0")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive int")
        if self.patience < 1:
            raise ValueError(f"patience={self.patience} must be >= 1")
        get_backend(self.backend)
        LRSchedule(self.schedule, self.lr, self.epochs)


def _batches(n, batch, rng=None):
    """Index batches: shuffled and full-sized only for training (rng given), so every step has the
    one tuned shape; in order with a final partial batch for evaluation (rng None)."""
    if rng is None:
        idx, stop = np.arange(n), n
    else:
        idx, stop = rng.permutation(n), n - batch + 1
    return [idx[i:i + batch] for i in range(0, stop, batch)]


def evaluate_arrays(model, x, y, batch: int):
    """(loss, accuracy) in evaluation mode. The last chunk is padded to the training batch size so
    every layer sees the one problem shape it was tuned for."""
    losses, correct = 0.0, 0
    for idx in _batches(len(y), batch):
        xb = x[idx]
        pad = batch - len(idx)
        if pad:
            xb = np.concatenate([xb, np.zeros((pad,) + xb.shape[1:], xb.dtype)])
        logits = model.forward(xb, training=False)[:len(idx)]
        loss, _ = softmax_cross_entropy(logits, y[idx])
        losses += loss * len(idx)
        correct += int((logits.argmax(axis=1) == y[idx]).sum())
    return losses / max(len(y), 1), correct / max(len(y), 1)


def save_checkpoint(path, model, cfg: TrainConfig, epoch: int, opt=None, norm=(0.0, 1.0)) -> Path:
    arrays = {f"param.{i}": p for i, p in enumerate(model.params)}
    if opt is not None:
        arrays.update({f"opt.{k}": v for k, v in opt.state_dict().items()})
    np.savez(path, config=json.dumps(asdict(cfg)), epoch=epoch, norm=np.array(norm), **arrays)
    return Path(path)


def load_checkpoint(path):
    """(model, config, epoch, optimizer state dict, normalisation) from a .npz checkpoint."""
    with np.load(path, allow_pickle=False) as z:
        cfg = TrainConfig(**json.loads(str(z["config"])))
        ds = datasets.load(cfg.data)
        model = build_model(cfg.model, ds.x.shape[1:], ds.classes, cfg.backend, cfg.init,
                            cfg.dropout, cfg.seed)
        for i, p in enumerate(model.params):
            p[...] = z[f"param.{i}"]
        opt_state = {k[4:]: z[k] for k in z.files if k.startswith("opt.")}
        return model, cfg, int(z["epoch"]), opt_state, tuple(z["norm"])


class _Progress:
    def __init__(self, enabled):
        self.enabled = enabled

    def __call__(self, epoch, epochs, i, n, loss):
        if self.enabled:
            done = int(20 * i / max(n, 1))
            sys.stderr.write(f"\repoch {epoch + 1}/{epochs} [{'#' * done}{'.' * (20 - done)}] "
                             f"loss {loss:.4f}")
            sys.stderr.flush()


def train(cfg: TrainConfig, out_dir=None, verbose: bool = True, resume: str | None = None,
          log=print) -> dict:
    """Train, evaluate the best weights on the held-out test split, write the run files."""
    cfg.validate()
    t_start = time.perf_counter()
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    ds = datasets.load(cfg.data)
    tr, va, te = datasets.split(ds, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    if len(tr) < cfg.batch_size:
        raise ValueError(f"batch_size={cfg.batch_size} exceeds the {len(tr)} training samples")
    mean, std = float(ds.x[tr].mean()), float(ds.x[tr].std()) or 1.0
    x = ((ds.x - mean) / std).astype(np.float32)
    model = build_model(cfg.model, x.shape[1:], ds.classes, cfg.backend, cfg.init, cfg.dropout,
                        cfg.seed)
    opt = make_optimizer(cfg.optimizer, model.params, cfg.lr, cfg.momentum, cfg.weight_decay)
    schedule = LRSchedule(cfg.schedule, cfg.lr, cfg.epochs)
    start_epoch = 0
    if resume:
        loaded, rcfg, start_epoch, opt_state, _ = load_checkpoint(resume)
        for p, q in zip(model.params, loaded.params):
            p[...] = q
        if opt_state:
            opt.load_state_dict(opt_state)
        start_epoch += 1
    rng = np.random.default_rng(cfg.seed + 1 + start_epoch)
    best = {"loss": float("inf"), "epoch": -1, "params": [p.copy() for p in model.params]}
    history, stale, epoch = [], 0, start_epoch - 1
    progress = _Progress(verbose and sys.stderr.isatty())
    interrupted = False
    try:
        for epoch in range(start_epoch, cfg.epochs):
            opt.lr = schedule.lr(epoch)
            t0 = time.perf_counter()
            batches = _batches(len(tr), cfg.batch_size, rng)
            tot, correct, seen = 0.0, 0, 0
            for i, idx in enumerate(batches):
                xb = x[tr[idx]]
                if cfg.augment:
                    xb = datasets.augment(xb, rng, 1, ds.flips)
                yb = ds.y[tr[idx]]
                logits = model.forward(xb, training=True)
                loss, dlogits = softmax_cross_entropy(logits, yb)
                model.backward(dlogits)
                opt.step(model.grads)
                tot += loss * len(idx)
                correct += int((logits.argmax(1) == yb).sum())
                seen += len(idx)
                progress(epoch, cfg.epochs, i + 1, len(batches), tot / seen)
            epoch_s = time.perf_counter() - t0
            val_loss, val_acc = evaluate_arrays(model, x[va], ds.y[va], cfg.batch_size) if len(va) \
                else (tot / seen, correct / seen)
            row = dict(epoch=epoch, lr=opt.lr, train_loss=tot / seen, train_acc=correct / seen,
                       val_loss=val_loss, val_acc=val_acc, epoch_s=epoch_s)
            history.append(row)
            if verbose:
                sys.stderr.write(f"\repoch {epoch + 1}/{cfg.epochs}: loss {row['train_loss']:.4f} "
                                 f"acc {row['train_acc']:.3f} | val loss {val_loss:.4f} acc "
                                 f"{val_acc:.3f} | {epoch_s:.2f} s\n")
            if epoch == start_epoch and verbose:
                for name, chosen in model.backends():
                    log(f"  backend {name}: " + ", ".join(f"{d} {b}" for d, b in chosen.items()))
            if val_loss < best["loss"] - 1e-6:
                best = {"loss": val_loss, "epoch": epoch,
                        "params": [p.copy() for p in model.params]}
                stale = 0
                if out:
                    save_checkpoint(out / "best.npz", model, cfg, epoch, opt, (mean, std))
            else:
                stale += 1
                if stale >= cfg.patience:
                    if verbose:
                        log(f"early stop: no better validation loss for {cfg.patience} epochs; "
                            f"restoring epoch {best['epoch'] + 1}")
                    break
    except KeyboardInterrupt:
        interrupted = True
        if out:
            save_checkpoint(out / "interrupted.npz", model, cfg, max(epoch, 0), opt, (mean, std))
        log("interrupted: checkpoint saved" + (f" to {out / 'interrupted.npz'}" if out else ""))
    for p, q in zip(model.params, best["params"]):
        p[...] = q
    test_loss, test_acc = (evaluate_arrays(model, x[te], ds.y[te], cfg.batch_size) if len(te)
                           else (None, None))
    summary = {"test_accuracy": test_acc, "test_loss": test_loss, "best_epoch": best["epoch"] + 1,
               "epochs_run": len(history), "seconds": time.perf_counter() - t_start,
               "mean_epoch_s": float(np.mean([h["epoch_s"] for h in history])) if history else None,
               "interrupted": interrupted,
               "backends": {name: chosen for name, chosen in model.backends()},
               "config": asdict(cfg),
               "samples": {"train": len(tr), "val": len(va), "test": len(te)}}
    if out:
        _write_log(out / "log.csv", history)
        _plot(out / "curves.png", history, best["epoch"])
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        write_index(out)
    summary["history"] = history
    return summary


def _write_log(path, history):
    pd.DataFrame(history, columns=list(history[0]) if history else ["epoch"]).to_csv(path,
                                                                                    index=False)


def _plot(path, history, best_epoch):
    if not history:
        return
    from matplotlib.figure import Figure  # lazy: matplotlib loads only when curves are drawn
    ep = [h["epoch"] + 1 for h in history]
    fig = Figure(figsize=(10, 4))
    a, b = fig.subplots(1, 2)
    a.plot(ep, [h["train_loss"] for h in history], label="train")
    a.plot(ep, [h["val_loss"] for h in history], label="validation")
    a.axvline(best_epoch + 1, color="grey", ls="--", label="best")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    b.plot(ep, [h["train_acc"] for h in history], label="train")
    b.plot(ep, [h["val_acc"] for h in history], label="validation")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def evaluate_checkpoint(path) -> dict:
    """Accuracy of a checkpoint on its run's held-out test split."""
    model, cfg, epoch, _, (mean, std) = load_checkpoint(path)
    ds = datasets.load(cfg.data)
    _, _, te = datasets.split(ds, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    x = ((ds.x[te] - mean) / std).astype(np.float32)
    loss, acc = evaluate_arrays(model, x, ds.y[te], cfg.batch_size)
    return {"test_accuracy": acc, "test_loss": loss, "epoch": epoch + 1, "samples": len(te)}


def tune(base: TrainConfig, space: dict, mode: str = "random", trials: int = 8, seed: int = 0,
         out_dir=None, log=print) -> list[dict]:
    """Random or grid search over `space` (name -> list of values, or (low, high) for a log-uniform
    learning rate in random mode), ranked by validation accuracy then loss."""
    rng = np.random.default_rng(seed)
    if mode == "grid":
        keys = list(space)
        combos = [dict(zip(keys, vals)) for vals in itertools.product(*(space[k] for k in keys))]
    elif mode == "random":
        combos = []
        for _ in range(trials):
            c = {}
            for k, v in space.items():
                if isinstance(v, tuple) and len(v) == 2 and all(isinstance(t, float) for t in v):
                    c[k] = float(np.exp(rng.uniform(np.log(v[0]), np.log(v[1]))))
                else:
                    c[k] = v[int(rng.integers(len(v)))]
            combos.append(c)
    else:
        raise ValueError(f"mode={mode!r} must be 'random' or 'grid'")
    results = []
    for i, combo in enumerate(combos):
        cfg = dataclasses.replace(base, **combo)
        s = train(cfg, None, verbose=False)
        best = max(s["history"], key=lambda h: (h["val_acc"], -h["val_loss"]))
        results.append({**combo, "val_acc": best["val_acc"], "val_loss": best["val_loss"],
                        "test_accuracy": s["test_accuracy"], "epochs_run": s["epochs_run"],
                        "seconds": s["seconds"]})
        log(f"trial {i + 1}/{len(combos)}: {combo} -> val acc {best['val_acc']:.4f}")
    results.sort(key=lambda r: (-r["val_acc"], r["val_loss"]))
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(results).to_csv(out / "tune.csv", index=False)
    return results
