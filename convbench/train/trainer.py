"""Mini-batch training with validation, early stopping, checkpoints, logs and plots.

A run writes to its out directory: best.npz (the checkpoint at the best validation loss; on Ctrl-C
also interrupted.npz), log.csv (one row per epoch, appended as each ends), curves.png,
summary.json (test_accuracy, best_epoch, epochs_run, seconds, and the backend chosen for each layer
and direction) and index.html (one page for the run; `convbench inspect` adds its figures to it).
Checkpoints, the summary and the figure are written whole (a temporary file, then a rename), so
a kill or a full disk never leaves a truncated one. A loss that turns NaN or infinite stops the run
(summary "diverged" says where); the best checkpoint so far stays.
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from convbench import files
from convbench.backends import get_backend
from convbench.errors import ConvbenchError
from convbench.kernels import quiet_blas
from convbench.memory import check_limit, workspace_limit
from convbench.train import data as datasets
from convbench.train.init import INITIALISERS
from convbench.train.layers import softmax_cross_entropy
from convbench.train.model import MODELS, build_model
from convbench.train.optim import OPTIMIZERS, LRSchedule, make_optimizer
from convbench.train.run_index import write_index

#: The columns of log.csv, one row per epoch.
LOG_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_s")


class ConfigError(ValueError):
    """A TrainConfig field with a value it cannot take; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class CheckpointError(ConvbenchError, ValueError):
    """A file that is not a convbench checkpoint, or one that does not fit the model asked for."""


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
    #: with backend="auto": the most scratch bytes a layer's chosen backend may need (None: none)
    workspace_limit: int | None = None

    def validate(self):
        """ConfigError (naming the field and the value) for anything training cannot use; the
        data set's spec and folder are checked, its files are read later."""
        def bad(field, why):
            raise ConfigError(field, f"{field}={getattr(self, field)!r} {why}")

        def number(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
        if self.model not in MODELS:
            bad("model", f"must be one of {', '.join(MODELS)}")
        if self.init not in INITIALISERS:
            bad("init", f"must be one of {', '.join(INITIALISERS)}")
        if not (number(self.lr) and self.lr > 0):
            bad("lr", "must be a finite number > 0")
        if self.momentum is not None and not (number(self.momentum) and self.momentum >= 0):
            bad("momentum", "must be a finite number >= 0")
        if not (number(self.weight_decay) and self.weight_decay >= 0):
            bad("weight_decay", "must be a finite number >= 0")
        if not (number(self.dropout) and 0 <= self.dropout < 1):
            bad("dropout", "must be in [0, 1)")
        for name in ("epochs", "batch_size", "patience"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(name, "must be a positive int")
        if not isinstance(self.seed, int) or self.seed < 0:
            bad("seed", "must be an int >= 0")
        try:
            check_limit(self.workspace_limit)
        except ValueError as e:
            raise ConfigError("workspace_limit", str(e)) from None
        try:
            datasets.check_spec(self.data)
        except ValueError as e:
            raise ConfigError("data", str(e)) from None
        try:
            get_backend(self.backend)
            LRSchedule(self.schedule, self.lr, self.epochs)
        except ValueError as e:
            raise ConfigError("backend" if "backend" in str(e) else "schedule", str(e)) from None


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
    """Write the checkpoint whole: a temporary file beside `path`, renamed over it."""
    arrays = {f"param.{i}": p for i, p in enumerate(model.params)}
    if opt is not None:
        arrays.update({f"opt.{k}": v for k, v in opt.state_dict().items()})
    with files.atomic_path(path) as tmp:
        np.savez(tmp, config=json.dumps(asdict(cfg)), epoch=epoch, norm=np.array(norm), **arrays)
    return Path(path)


def load_checkpoint(path):
    """(model, config, epoch, optimizer state dict, normalisation) from a .npz checkpoint.
    CheckpointError when the file is not one (not an archive, cut short, other contents)."""
    def broken(why):
        return CheckpointError(f"{path} is not a convbench checkpoint ({why})")

    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise broken("not an .npz archive, which is a zip file")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise broken(f"the archive cannot be read: {e}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise broken("a single array, not an .npz archive")
    with z:
        missing = [k for k in ("config", "epoch", "norm", "param.0") if k not in z.files]
        if missing:
            raise broken(f"no {', '.join(missing)} in it")
        try:
            fields = json.loads(str(z["config"]))
            cfg = TrainConfig(**fields)
            epoch, norm = int(z["epoch"]), tuple(float(v) for v in z["norm"])
            arrays = {k: z[k] for k in z.files if k.startswith(("param.", "opt."))}
        except (ValueError, TypeError, KeyError, EOFError, OSError, zipfile.BadZipFile) as e:
            raise broken(f"{type(e).__name__}: {e}") from None
    ds = datasets.load(cfg.data)
    model = build_model(cfg.model, ds.x.shape[1:], ds.classes, cfg.backend, cfg.init,
                        cfg.dropout, cfg.seed)
    for i, p in enumerate(model.params):
        q = arrays.get(f"param.{i}")
        if q is None or q.shape != p.shape:
            raise broken(f"parameter {i} is {'missing' if q is None else q.shape}, the model "
                         f"{cfg.model} needs {p.shape}")
        p[...] = q
    opt_state = {k[4:]: v for k, v in arrays.items() if k.startswith("opt.")}
    return model, cfg, epoch, opt_state, norm


class _Progress:
    def __init__(self, enabled):
        self.enabled = enabled

    def __call__(self, epoch, epochs, i, n, loss):
        if self.enabled:
            done = int(20 * i / max(n, 1))
            sys.stderr.write(f"\repoch {epoch + 1}/{epochs} [{'#' * done}{'.' * (20 - done)}] "
                             f"loss {loss:.4f}")
            sys.stderr.flush()


def _resume_from(path, cfg: TrainConfig, model, opt) -> int:
    """Load checkpoint `path` into model and opt; the epoch to start at. CheckpointError when it
    does not fit cfg, ConfigError when cfg.epochs leaves nothing to train."""
    loaded, rcfg, done, opt_state, _ = load_checkpoint(path)
    if [p.shape for p in loaded.params] != [p.shape for p in model.params]:
        raise CheckpointError(f"{path} holds a {rcfg.model} for data {rcfg.data!r}, which does "
                              f"not fit model={cfg.model!r} with data={cfg.data!r}")
    if opt_state and rcfg.optimizer != cfg.optimizer:
        raise CheckpointError(f"{path} holds the state of optimizer {rcfg.optimizer!r}, which "
                              f"optimizer={cfg.optimizer!r} cannot continue")
    if done + 1 >= cfg.epochs:
        raise ConfigError("epochs", f"epochs={cfg.epochs} leaves nothing to train: the "
                                    f"checkpoint {path} has finished {done + 1} epochs")
    for p, q in zip(model.params, loaded.params):
        p[...] = q
    if opt_state:
        opt.load_state_dict(opt_state)
    return done + 1


class _EpochLog:
    """log.csv, one row appended (and flushed) as each epoch ends; on resume the rows of the
    epochs before the checkpoint's are kept."""

    def __init__(self, path: Path | None, start_epoch: int):
        self.path = path
        if path is None:
            return
        kept = []
        if start_epoch and path.exists():
            try:
                old = pd.read_csv(path)
                kept = old[old["epoch"] < start_epoch].to_dict("records")
            except (ValueError, KeyError, OSError):
                kept = []          # an unreadable old log is replaced
        with files.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, LOG_COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows(kept)

    def add(self, row: dict) -> None:
        if self.path is None:
            return
        try:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, LOG_COLUMNS, extrasaction="ignore").writerow(row)
        except OSError as e:          # a write says not which file
            raise OSError(e.errno, e.strerror, str(self.path)) from e


def train(cfg: TrainConfig, out_dir=None, verbose: bool = True, resume: str | None = None,
          log=print) -> dict:
    """Train, evaluate the best weights on the held-out test split, write the run files.

    Returns the summary; its "diverged" is None, or where the loss stopped being finite (the run
    then stops, keeping the best checkpoint so far). With backend="auto", each layer's choice
    keeps within cfg.workspace_limit. The BLAS runs on one thread throughout (quiet_blas): a
    training step alternates layers, and the BLAS's workers, busy-waiting after one layer's
    product, would take the cores from the next layer's Numba kernels."""
    cfg.validate()
    with workspace_limit(cfg.workspace_limit), quiet_blas():
        return _train(cfg, out_dir, verbose, resume, log)


def _train(cfg: TrainConfig, out_dir, verbose: bool, resume: str | None, log) -> dict:
    t_start = time.perf_counter()
    out = Path(out_dir) if out_dir else None
    ds = datasets.load(cfg.data)
    tr, va, te = datasets.split(ds, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    if len(tr) < cfg.batch_size:
        raise ConfigError("batch_size", f"batch_size={cfg.batch_size} exceeds the {len(tr)} "
                                        f"training samples")
    mean, std = float(ds.x[tr].mean()), float(ds.x[tr].std()) or 1.0
    x = ((ds.x - mean) / std).astype(np.float32)
    model = build_model(cfg.model, x.shape[1:], ds.classes, cfg.backend, cfg.init, cfg.dropout,
                        cfg.seed)
    opt = make_optimizer(cfg.optimizer, model.params, cfg.lr, cfg.momentum, cfg.weight_decay)
    schedule = LRSchedule(cfg.schedule, cfg.lr, cfg.epochs)
    start_epoch = _resume_from(resume, cfg, model, opt) if resume else 0
    if out:
        out.mkdir(parents=True, exist_ok=True)
    epoch_log = _EpochLog(out / "log.csv" if out else None, start_epoch)
    rng = np.random.default_rng(cfg.seed + 1 + start_epoch)
    best = {"loss": float("inf"), "epoch": -1, "params": [p.copy() for p in model.params]}
    history, stale, epoch = [], 0, start_epoch - 1
    progress = _Progress(verbose and sys.stderr.isatty())
    interrupted, diverged = False, None
    # overflow on the way to a NaN loss is reported once, as `diverged`, not as warnings
    fp_state = np.seterr(over="ignore", invalid="ignore", divide="ignore")
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
                if not math.isfinite(loss):
                    diverged = (f"the training loss became {loss} in epoch {epoch + 1}, batch "
                                f"{i + 1} (lr {opt.lr:.3g}; a smaller --lr may help)")
                    break
                model.backward(dlogits)
                opt.step(model.grads)
                tot += loss * len(idx)
                correct += int((logits.argmax(1) == yb).sum())
                seen += len(idx)
                progress(epoch, cfg.epochs, i + 1, len(batches), tot / seen)
            if diverged:
                break
            epoch_s = time.perf_counter() - t0
            val_loss, val_acc = evaluate_arrays(model, x[va], ds.y[va], cfg.batch_size) if len(va) \
                else (tot / seen, correct / seen)
            if not math.isfinite(val_loss):
                diverged = (f"the validation loss became {val_loss} after epoch {epoch + 1} "
                            f"(lr {opt.lr:.3g}; a smaller --lr may help)")
                break
            row = dict(epoch=epoch, lr=opt.lr, train_loss=tot / seen, train_acc=correct / seen,
                       val_loss=val_loss, val_acc=val_acc, epoch_s=epoch_s)
            history.append(row)
            epoch_log.add(row)
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
    finally:
        np.seterr(**fp_state)
    if diverged and verbose:
        sys.stderr.write("\n")
    for p, q in zip(model.params, best["params"]):
        p[...] = q
    test_loss, test_acc = (evaluate_arrays(model, x[te], ds.y[te], cfg.batch_size) if len(te)
                           else (None, None))
    summary = {"test_accuracy": test_acc, "test_loss": test_loss, "best_epoch": best["epoch"] + 1,
               "epochs_run": len(history), "seconds": time.perf_counter() - t_start,
               "mean_epoch_s": float(np.mean([h["epoch_s"] for h in history])) if history else None,
               "interrupted": interrupted, "diverged": diverged,
               "backends": {name: chosen for name, chosen in model.backends()},
               "config": asdict(cfg),
               "samples": {"train": len(tr), "val": len(va), "test": len(te)}}
    if out:
        _plot(out / "curves.png", history, best["epoch"])
        files.write_text(out / "summary.json", json.dumps(summary, indent=1))
        write_index(out)
    summary["history"] = history
    return summary


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
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)


def evaluate_checkpoint(path) -> dict:
    """Accuracy of a checkpoint on its run's held-out test split."""
    model, cfg, epoch, _, (mean, std) = load_checkpoint(path)
    ds = datasets.load(cfg.data)
    _, _, te = datasets.split(ds, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    x = ((ds.x[te] - mean) / std).astype(np.float32)
    loss, acc = evaluate_arrays(model, x, ds.y[te], cfg.batch_size)
    return {"test_accuracy": acc, "test_loss": loss, "epoch": epoch + 1, "samples": len(te)}


def _rank(row: dict) -> tuple:
    """A trial's place in a search: by validation accuracy, then loss (missing ones last)."""
    return (-np.nan_to_num(row["val_acc"], nan=-1.0), np.nan_to_num(row["val_loss"], nan=np.inf))


def run_trial(cfg: TrainConfig) -> tuple[dict, bytes | None]:
    """One trial of a search, trained in a temporary folder: (its numbers as a tune.csv row,
    the bytes of its best.npz, None when no epoch finished). Its arguments and results pickle,
    so that a worker process can run it."""
    with tempfile.TemporaryDirectory(prefix="convbench-trial-") as tmp:
        s = train(cfg, tmp, verbose=False)
        path = Path(tmp) / "best.npz"
        checkpoint = path.read_bytes() if path.exists() else None
    best = max(s["history"], key=lambda h: (h["val_acc"], -h["val_loss"]),
               default={"val_acc": float("nan"), "val_loss": float("nan")})
    return ({"val_acc": best["val_acc"], "val_loss": best["val_loss"],
             "test_accuracy": s["test_accuracy"], "epochs_run": s["epochs_run"],
             "seconds": s["seconds"], "diverged": s["diverged"] or ""}, checkpoint)


def tune(base: TrainConfig, space: dict, mode: str = "random", trials: int = 8, seed: int = 0,
         out_dir=None, log=print, map_trials=None) -> list[dict]:
    """Random or grid search over `space` (name -> list of values, or (low, high) for a log-uniform
    learning rate in random mode), ranked by validation accuracy then loss. With out_dir, writes
    tune.csv and the best trial's checkpoint, best.npz.

    map_trials(run_trial, configs) runs the trials elsewhere (a cluster's): it yields (index,
    run_trial's result, None) or (index, None, why it failed) in any order."""
    if mode == "random" and (not isinstance(trials, int) or trials < 1):
        raise ConfigError("trials", f"trials={trials!r} must be an int >= 1")
    for k, v in space.items():
        if not len(v):
            raise ConfigError(k, f"{k}: no values to search")
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
    cfgs = [dataclasses.replace(base, **combo) for combo in combos]
    outcomes = (map_trials(run_trial, cfgs) if map_trials is not None else
                ((i, run_trial(cfg), None) for i, cfg in enumerate(cfgs)))
    results, best, best_checkpoint = [None] * len(combos), None, None
    for i, outcome, error in outcomes:
        combo = combos[i]
        if error is not None:       # the trial could not finish (its worker died)
            row, checkpoint = {"val_acc": math.nan, "val_loss": math.nan,
                               "test_accuracy": math.nan, "epochs_run": 0, "seconds": math.nan,
                               "diverged": error}, None
        else:
            row, checkpoint = outcome
        results[i] = {**combo, **row}
        if checkpoint is not None and (best is None or _rank(results[i]) < _rank(best)):
            best, best_checkpoint = results[i], checkpoint
        log(f"trial {i + 1}/{len(combos)}: {combo} -> val acc {row['val_acc']:.4f}"
            + (f" (stopped: {row['diverged']})" if row["diverged"] else ""))
    # a trial that diverged before its first epoch has no accuracy: it ranks last
    results.sort(key=_rank)
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with files.atomic_path(out / "tune.csv") as tmp:
            pd.DataFrame(results).to_csv(tmp, index=False)
        if best_checkpoint is not None:
            files.write_bytes(out / "best.npz", best_checkpoint)
        elif (out / "best.npz").exists():         # an earlier search's, not this one's
            (out / "best.npz").unlink()
    return results
