"""The convbench command line (click).

The harness and the trainer, which bring pandas and matplotlib, are imported by the commands that
use them (the imports marked "per command"), so that `convbench --help` loads no backend, no
pandas or matplotlib, and compiles nothing.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

import click

from convbench.backends import (
    backend_names,
    get_backend,
    list_backends,
    load_backend_file,
    load_entry_points,
)
from convbench.errors import BackendRegistrationError
from convbench.filters import gallery, matrix_figure, matrix_path
from convbench.machine import fingerprint, measure_peaks
from convbench.threads import set_threads
from convbench.timing import TimingPolicy


def _split(value: str | None):
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _backend_files(f):
    """The --backend-file option: user backends to register before the command runs."""
    return click.option(
        "--backend-file", "backend_files", multiple=True,
        type=click.Path(exists=True, dir_okay=False),
        help="a Python file of convbench.Backend subclasses to register (repeatable)")(f)


def _register_user_backends(files) -> None:
    """Register the backends of --backend-file and of installed entry points; a problem with
    either is a usage error naming the file or entry point."""
    try:
        for path in files:
            load_backend_file(path)
        load_entry_points()
    except BackendRegistrationError as e:
        raise click.UsageError(str(e)) from e


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="convbench")
def main():
    """convbench: deep-learning kernels implemented several ways, proven equal, timed on real
    shapes."""


@main.command()
@_backend_files
def backends(backend_files):
    """List the backends, whether each can run here (and why not), and their ops."""
    _register_user_backends(backend_files)
    for info in list_backends():
        state = "available" if info.available else f"unavailable: {info.reason}"
        roles = [r for r, on in (("peer", info.peer), ("auto candidate", info.auto_candidate))
                 if on]
        click.echo(f"{info.name:<11} {state}" + (f" [{', '.join(roles)}]" if roles else ""))
        click.echo(f"{'':<11} {info.description}")
        if info.origin != "built-in":
            click.echo(f"{'':<11} from {info.origin}")
        click.echo(f"{'':<11} ops: {', '.join(info.ops) or '-'}")


@main.command()
@click.option("--cases", "cases", default="all", show_default=True,
              help="case list: all, conv-edge, conv-random, ... (see convbench.cases)")
@click.option("--backends", "backend_list", default=None,
              help="comma-separated backends (default: all registered)")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True,
              help="seed of the random case list and of the input values")
@click.option("--cuda-sim", is_flag=True,
              help="run numba-cuda kernels on Numba's CPU simulator (tiny cases only)")
@_backend_files
def verify(cases, backend_list, dtype, seed, cuda_sim, backend_files):
    """Run every backend on a case list against the float64 reference; print the matrix.

    Exits 1 if any result is FAILED.
    """
    _register_user_backends(backend_files)
    if cuda_sim:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    from convbench.harness.verify_report import run_matrix  # per command
    ok = run_matrix(cases, _split(backend_list), dtype, seed, click.echo)
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("image", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--backend", default="im2col", show_default=True)
@click.option("--out", "out_path", default="filters.png", show_default=True,
              type=click.Path(dir_okay=False, writable=True))
def filters(image, backend, out_path):
    """Apply the classic 3x3 filters to IMAGE (default: matplotlib's sample photograph) and write
    one figure comparing zero padding with reflect padding, and a second (OUT-matrix.png) with a
    small convolution as one sparse matrix beside im2col's column matrix."""
    click.echo(f"wrote {gallery(image, out_path, backend)}")
    click.echo(f"wrote {matrix_figure(matrix_path(out_path))}")


def _progress(echo_err):
    """A one-line progress bar on stderr: cases done, the case being timed, time left."""
    def show(i, n, case, op, elapsed):
        width = 24
        done = int(width * i / max(n, 1))
        eta = f"{elapsed / i * (n - i):5.0f} s left" if i else "  ... s left"
        what = f"{case.name} [{op.direction}]" if case is not None else "done"
        line = f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {eta}  {what[:60]:<60}"
        echo_err(line, nl=case is None)
    return show


@main.command()
@click.option("--suite", "suite", default="quick", show_default=True,
              help="built-in suite (quick, resnet50, vgg16, mobilenet, deepbench-train, "
                   "deepbench-inference, deepbench-rnn, pooling, rnn, decoders), "
                   "fuzz[:SEED[:COUNT]], a file of descriptors, or an ONNX model (*.onnx)")
@click.option("--backends", "backend_list", default=None,
              help="comma-separated backends (default: every registered one)")
@click.option("--batch", type=int, default=None, help="batch size for every case")
@click.option("--direction", "direction", default="fwd", show_default=True,
              help="comma-separated: fwd, bwd-data, bwd-weights, bwd (all gradients), all")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--threads", type=int, default=None, help="threads for Numba, BLAS and torch")
@click.option("--out", "out_dir", default=None, help="run directory (default runs/<suite>-<time>)")
@click.option("--resume", is_flag=True, help="keep the rows already in --out and skip them")
@click.option("--budget", type=float, default=0.5, show_default=True,
              help="seconds of timed repetitions per case and backend")
@click.option("--limit", "per_case_limit", type=float, default=30.0, show_default=True,
              help="skip a backend whose estimated time per call exceeds this (seconds)")
@click.option("--cold-cache", is_flag=True,
              help="rotate input copies larger than the last-level cache")
@click.option("--baseline", default=None,
              help="backend the report compares against (default torch)")
@click.option("--no-peaks", is_flag=True, help="skip measuring the machine's peaks (roofline)")
@click.option("--input-shape", "input_shapes", multiple=True,
              help="an ONNX model's input shape where it is dynamic: NAME:1,3,224,224, or "
                   "1,3,224,224 for its only input (repeat for several inputs)")
@_backend_files
def run(suite, backend_list, batch, direction, dtype, threads, out_dir, resume, budget,
        per_case_limit, cold_cache, baseline, no_peaks, input_shapes, backend_files):
    """Verify, then time, every case of a suite on every backend; write CSV, JSON and HTML."""
    from convbench.harness.report import (  # per command
        choose_baseline,
        peers_of,
        summary,
        whole_model,
    )
    from convbench.harness.runner import DIRECTIONS, RunConfig, run_suite  # per command
    from convbench.harness.suites import is_model_file, load_suite  # per command

    _register_user_backends(backend_files)
    backends = _split(backend_list) or backend_names()
    for b in backends:
        get_backend(b)                     # unknown names: an error listing the valid ones
    dirs = _split(direction) or ["fwd"]
    if dirs == ["all"]:
        dirs = list(DIRECTIONS)
    for d in dirs:
        if d not in DIRECTIONS:
            raise click.BadParameter(f"{d!r}; valid: {', '.join(DIRECTIONS)}, all",
                                     param_hint="--direction")
    if threads is not None and threads < 1:
        raise click.BadParameter(f"{threads} must be >= 1", param_hint="--threads")
    if budget <= 0:
        raise click.BadParameter(f"{budget} must be > 0", param_hint="--budget")
    try:
        cases = load_suite(suite, batch, list(input_shapes) or None)
    except (ValueError, OSError) as e:
        raise click.BadParameter(str(e), param_hint="--suite") from e
    if resume and out_dir is None:
        raise click.BadParameter("--resume needs --out (the run directory to continue)",
                                 param_hint="--resume")
    out_dir = out_dir or (f"runs/{suite.replace('/', '_').replace(':', '_')}-"
                          f"{time.strftime('%Y%m%d-%H%M%S')}")
    policy = TimingPolicy(budget_s=budget, warmup_budget_s=min(budget, 0.5))
    cfg = RunConfig(suite, cases, backends, tuple(dirs), dtype, threads, policy, per_case_limit,
                    cold_cache, baseline, whole_model=is_model_file(suite))
    click.echo(f"suite {suite}: {len(cases)} cases x {len(backends)} backends -> {out_dir}")
    progress = _progress(lambda m, nl: click.echo(m, err=True, nl=nl))
    try:
        frame, meta = run_suite(cfg, out_dir, resume, progress, peaks=not no_peaks)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: every finished row is kept in {out_dir} "
                   f"(continue with --resume --out {out_dir})", err=True)
        sys.exit(130)
    base = choose_baseline(frame, baseline)
    peers = peers_of(frame, meta)
    for s in summary(frame, base, peers).itertuples(index=False):
        sp = "" if math.isnan(s.speedup) else f" {s.speedup:.2f}x vs {base}"
        peer = ("" if math.isnan(s.own_vs_peer) else
                f"; best peer {s.best_peer}, {s.best_own} {s.own_vs_peer:.2f}x of it")
        click.echo(f"  {s.case} [{s.direction}]: best {s.best or '-'}{sp}{peer}")
    if meta.get("counts"):
        totals, _ = whole_model(frame, meta["counts"], base, peers)
        click.echo(f"whole model ({len(meta['counts'])} distinct layers, "
                   f"{sum(meta['counts'].values())} calls):")
        for r in totals.itertuples():
            total = "incomplete" if math.isnan(r.total_s) else f"{r.total_s * 1e3:.3f} ms"
            sp = "" if math.isnan(r.speedup) else f"  {r.speedup:.2f}x vs {base}"
            click.echo(f"  [{r.direction}] {r.backend}: {total} ({r.layers} of {r.of} "
                       f"layers){sp}")
    counts = frame["status"].value_counts().sort_index()
    click.echo(f"{len(frame)} results ({', '.join(f'{v} {k}' for k, v in counts.items())}) "
               f"in {meta['wall_s']:.1f} s")
    click.echo(f"report: {out_dir}/report.html  (data: results.csv, results.json)")
    sys.exit(1 if counts.get("FAILED", 0) else 0)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--baseline", default=None, help="backend to compare against (default torch)")
def report(run_dir, baseline):
    """(Re)write RUN_DIR/report.html from its results (an interrupted run's too)."""
    from convbench.harness.report import write_report  # per command
    from convbench.harness.runner import load_run  # per command
    rows, meta = load_run(run_dir)
    click.echo(f"wrote {write_report(run_dir, rows, meta, baseline)}")


@main.command()
@click.argument("run_a", type=click.Path(exists=True, file_okay=False))
@click.argument("run_b", type=click.Path(exists=True, file_okay=False))
@click.option("--threshold", type=float, default=0.05, show_default=True,
              help="relative change of the median that counts")
@click.option("--alpha", type=float, default=0.01, show_default=True,
              help="significance level of the Mann-Whitney U test")
@click.option("--html", "html_path", default=None, help="also write the comparison as HTML")
def compare(run_a, run_b, threshold, alpha, html_path):
    """Per-case ratios of RUN_B against RUN_A; exits 1 on a significant regression."""
    from convbench.harness.compare import (  # per command
        compare_runs,
        format_text,
        regressions,
        write_html,
    )
    lines, diffs = compare_runs(run_a, run_b, threshold, alpha)
    click.echo(format_text(lines, diffs, "A", "B"))
    if html_path:
        click.echo(f"wrote {write_html(html_path, lines, diffs, run_a, run_b)}")
    sys.exit(1 if len(regressions(lines)) else 0)


@main.command()
@click.option("--no-peaks", is_flag=True, help="skip measuring the peaks")
def info(no_peaks):
    """The machine fingerprint and its measured peaks (SGEMM GFLOP/s, copy GB/s)."""
    data = {"machine": fingerprint()}
    if not no_peaks:
        data["peaks"] = measure_peaks()
    click.echo(json.dumps(data, indent=1))


def _train_options(f):
    opts = [
        click.option("--data", default="digits", show_default=True,
                     help="digits (shipped with scikit-learn), mnist:PATH or cifar10:PATH"),
        click.option("--model", type=click.Choice(["small-cnn", "resnet-mini"]),
                     default="small-cnn", show_default=True),
        click.option("--optimizer", default="adam", show_default=True,
                     help="sgd, momentum, nesterov, adagrad, rmsprop, adam"),
        click.option("--lr", type=float, default=2e-3, show_default=True),
        click.option("--momentum", type=float, default=None),
        click.option("--weight-decay", type=float, default=0.0, show_default=True),
        click.option("--epochs", type=int, default=30, show_default=True),
        click.option("--batch-size", type=int, default=64, show_default=True),
        click.option("--patience", type=int, default=6, show_default=True,
                     help="early stopping: epochs without a better validation loss"),
        click.option("--schedule", type=click.Choice(["constant", "step", "cosine"]),
                     default="cosine", show_default=True),
        click.option("--init", default="he_uniform", show_default=True,
                     help="xavier_uniform, xavier_normal, he_uniform, he_normal"),
        click.option("--dropout", type=float, default=0.25, show_default=True),
        click.option("--no-augment", is_flag=True, help="no random shifts (or flips, for photos)"),
        click.option("--backend", default="auto", show_default=True,
                     help="auto (fastest verified per layer) or a backend name"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--threads", type=int, default=None),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _config(kw):
    from convbench.train import TrainConfig  # per command
    set_threads(kw.pop("threads"))
    kw["augment"] = not kw.pop("no_augment")
    return TrainConfig(**kw)


@main.command()
@_train_options
@click.option("--out", "out_dir", default="runs/train", show_default=True)
@click.option("--resume", "resume", default=None, type=click.Path(exists=True, dir_okay=False),
              help="a checkpoint to continue from")
def train(out_dir, resume, **kw):
    """Train a small CNN on convbench's kernels; writes best.npz, log.csv, curves.png and
    summary.json."""
    from convbench.train import train as run_train  # per command
    try:
        cfg = _config(kw)
        cfg.validate()
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    s = run_train(cfg, out_dir, verbose=True, resume=resume, log=click.echo)
    click.echo(f"test accuracy {s['test_accuracy']:.4f} (best epoch {s['best_epoch']} of "
               f"{s['epochs_run']}) in {s['seconds']:.1f} s; mean epoch {s['mean_epoch_s']:.3f} s")
    click.echo(f"wrote {out_dir}/summary.json, best.npz, log.csv, curves.png")


@main.command()
@_train_options
@click.option("--mode", type=click.Choice(["random", "grid"]), default="random", show_default=True)
@click.option("--trials", type=int, default=6, show_default=True, help="random search trials")
@click.option("--lrs", default="3e-4,3e-3", show_default=True,
              help="random: low,high of a log-uniform range; grid: the values")
@click.option("--optimizers", default="adam,rmsprop,nesterov", show_default=True)
@click.option("--out", "out_dir", default="runs/tune", show_default=True)
def tune(mode, trials, lrs, optimizers, out_dir, **kw):
    """Random or grid search over learning rate and optimiser; writes tune.csv, best first."""
    from convbench.train import tune as run_tune  # per command
    try:
        base = _config(kw)
        lr_values = [float(v) for v in _split(lrs)]
        space = {"optimizer": _split(optimizers)}
        space["lr"] = tuple(lr_values) if mode == "random" else lr_values
        if mode == "random" and len(lr_values) != 2:
            raise ValueError(f"--lrs={lrs!r}: random search takes low,high")
        for name in space["optimizer"]:
            base.__class__(**{**vars(base), "optimizer": name}).validate()
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    results = run_tune(base, space, mode, trials, base.seed, out_dir, log=click.echo)
    best = results[0]
    click.echo(f"best: {best}")
    click.echo(f"wrote {out_dir}/tune.csv")


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
def evaluate(checkpoint):
    """Test accuracy of a checkpoint on its run's held-out test split."""
    from convbench.train import evaluate_checkpoint  # per command
    click.echo(json.dumps(evaluate_checkpoint(checkpoint), indent=1))


@main.command("inspect")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", default=None,
              help="folder for the figures and inspect.json (default: inspect/ beside CHECKPOINT)")
@click.option("--image", "image_index", type=int, default=0, show_default=True,
              help="the test image whose feature maps are drawn")
@click.option("--channels", type=int, default=6, show_default=True,
              help="channels per conv layer to find maximising images for")
@click.option("--steps", type=int, default=200, show_default=True, help="gradient ascent steps")
@click.option("--backend", default="im2col", show_default=True,
              help="the conv backend whose forward and backward kernels run the model")
@click.option("--seed", type=int, default=0, show_default=True)
def inspect_command(checkpoint, out_dir, image_index, channels, steps, backend, seed):
    """What a trained model learned: first-layer filters against the classic 3x3 filters,
    feature maps, images that maximise a channel, translation equivariance and parameter
    counts; writes PNGs and inspect.json, and adds them to the run's index.html."""
    from convbench.train.inspection import inspect_checkpoint  # per command
    try:
        r = inspect_checkpoint(checkpoint, out_dir, image_index=image_index, channels=channels,
                               steps=steps, backend=backend, seed=seed, log=click.echo)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    if r["filters"]:
        best = ", ".join(f"{n} {c}" for n, c in r["filter_best_counts"].items())
        click.echo(f"first-layer filters' best classic match: {best} "
                   f"(median r {r['filter_similarity_median']:.2f})")
    for row in r["params"]:
        if row["kind"] == "conv":
            click.echo(f"  {row['layer']}: {row['params']:,} parameters, a dense layer would "
                       f"have {row['dense_params']:,} ({row['dense_over_conv']:,.0f}x)")
    click.echo(f"wrote {r['index']}")


if __name__ == "__main__":  # pragma: no cover
    main()
