"""The convbench command line (click).

The harness and the trainer, which bring pandas and matplotlib, are imported by the commands that
use them (the imports marked "per command"), so that `convbench --help` loads no backend, no
pandas or matplotlib, and compiles nothing.

Every error is click's: one line, `Error: ...` naming the option and the value where one is at
fault, no traceback (`convbench --debug COMMAND` shows it), exit status 2 (1 is kept for a command
that finished but found a FAILED result, a regression or a diverged training).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

from convbench.backends import (
    backend_names,
    list_backends,
    load_backend_file,
    load_entry_points,
)
from convbench.cases import CASE_LISTS
from convbench.errors import (
    BackendRegistrationError,
    BackendUnavailableError,
    ConvbenchError,
    UnsupportedError,
)
from convbench.filters import gallery, matrix_figure, matrix_path
from convbench.machine import blas_warning, fingerprint, measure_peaks
from convbench.memory import DEFAULT_FRACTION, available_bytes, format_bytes, parse_bytes
from convbench.threads import cpu_count, set_threads
from convbench.timing import TimingPolicy


class Failure(click.ClickException):
    """A command that could not do its work (a locked folder, a full disk, a file that cannot be
    read): click's one-line error, exit status 2."""

    exit_code = 2


class _Finite(click.FloatRange):
    """A float in a range that is also finite (click's FloatRange lets NaN and inf through)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("debug"))


def _bad(option: str, message: str) -> click.BadParameter:
    """The error of a bad `option` value; under --debug, called while handling an exception,
    that exception goes on instead, with its traceback."""
    if _debug() and sys.exc_info()[1] is not None:
        raise  # noqa: PLE0704 - re-raises the exception being handled, for --debug
    return click.BadParameter(message, param_hint=option)


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        text = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    elif isinstance(e, (ConvbenchError, ValueError)):
        text = str(e)
    else:
        text = f"{type(e).__name__}: {e} (an internal error: convbench --debug shows where)"
    return " ".join(text.split())


class _Main(click.Group):
    """The group: turns any exception of a command into click's one-line error (see the module
    docstring), unless --debug."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            if ctx.params.get("debug"):
                raise
            click.echo("\ninterrupted", err=True)
            ctx.exit(130)
        except Exception as e:  # noqa: BLE001 - every error becomes one line (--debug: traceback)
            if ctx.params.get("debug"):
                raise
            raise Failure(_one_line(e)) from e


def _names(value: str | None, option: str, valid=None, what: str = "name"):
    """A comma-separated option as a list, None when it was not given; an empty list or (with
    `valid`) an unknown name is an error naming the option."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise _bad(option, f"{value!r} names nothing: give one or more, separated by commas")
    if valid is not None:
        for v in items:
            if v not in valid:
                raise _bad(option, f"unknown {what} {v!r}; valid: {', '.join(valid)}")
    return items


def _backend_list(value: str | None, option: str = "--backends"):
    return _names(value, option, backend_names(include_meta=True), "backend")


def _check_threads(threads: int | None, oversubscribe: bool) -> None:
    usable = cpu_count()
    if threads is not None and threads > usable and not oversubscribe:
        raise _bad("--threads", f"{threads} exceeds the {usable} usable cores: threads would "
                                f"share cores and the timings measure that contention "
                                f"(--oversubscribe to run anyway)")


def _out_dir(path: str, option: str = "--out") -> Path:
    """The folder `path`, created if need be; an error naming the option when it is a file or
    cannot be created or written."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise _bad(option, f"{path!r} is a file, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _bad(option, f"{path!r} cannot be created ({e.strerror})") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise _bad(option, f"{path!r} is not writable")
    return p


def _out_file(path: str, option: str) -> Path:
    """A file to write: its folder must exist and be writable."""
    p = Path(path)
    if p.is_dir():
        raise _bad(option, f"{path!r} is a folder, not a file")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise _bad(option, f"{path!r}: the folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise _bad(option, f"{path!r} is not writable")
    return p


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


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


def _cluster_options(f):
    """--cluster and its security options."""
    opts = [
        click.option("--cluster", "cluster", default=None, metavar="ADDRESS|local:N",
                     help="measure on a Dask cluster: tls://HOST:PORT or tcp://HOST:PORT of a "
                          "`dask scheduler`, or local:N worker processes here (isolation); "
                          "needs the cluster extra"),
        click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="tls:// cluster: the CA certificate file"),
        click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="tls:// cluster: this client's certificate file"),
        click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="tls:// cluster: this client's private key file"),
        click.option("--insecure", is_flag=True,
                     help="allow a plain tcp:// scheduler that is not on loopback"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _cluster(address, tls_ca, tls_cert, tls_key, insecure, threads=None, backend_files=(),
             **kw):
    """The Cluster of the --cluster options, not yet open; None without --cluster. Errors name
    the option."""
    if address is None:
        for option, v in (("--tls-ca", tls_ca), ("--tls-cert", tls_cert),
                          ("--tls-key", tls_key)):
            if v:
                raise _bad(option, "is for a tls:// --cluster, and no --cluster is given")
        return None
    from convbench.harness.cluster import (  # per command
        Cluster,
        ClusterError,
        parse_address,
        security,
    )
    try:
        addr = parse_address(address, insecure)
        return Cluster(addr, security(addr, tls_ca, tls_cert, tls_key), threads,
                       backend_files, **kw)
    except ClusterError as e:
        raise _bad("--cluster", str(e)) from None


def _local_threads(address, threads, oversubscribe) -> int | None:
    """--threads for local:N workers: by default the usable cores shared out among them; more
    than the cores in all is an error unless --oversubscribe."""
    from convbench.harness.cluster import ClusterError, parse_address  # per command
    try:
        n = parse_address(address).workers if address else None
    except ClusterError:
        return threads                      # _cluster says what is wrong with it
    if not n:
        return threads
    if threads is None:
        return max(1, cpu_count() // n)
    if threads * n > cpu_count() and not oversubscribe:
        raise _bad("--threads", f"{threads} threads in each of {n} local workers is "
                                f"{threads * n}, more than the {cpu_count()} usable cores: the "
                                f"workers would share cores and the timings measure that "
                                f"(--oversubscribe allows it)")
    return threads


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="convbench")
@click.option("--debug", is_flag=True, help="show the Python traceback of an error")
def main(debug):
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
              type=click.Choice(["all", *CASE_LISTS]), help="case list (see convbench.cases)")
@click.option("--backends", "backend_list", default=None,
              help="comma-separated backends (default: all registered)")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="seed of the random case list and of the input values")
@click.option("--cuda-sim", is_flag=True,
              help="run numba-cuda kernels on Numba's CPU simulator (tiny cases only)")
@_backend_files
def verify(cases, backend_list, dtype, seed, cuda_sim, backend_files):
    """Run every backend on a case list against the float64 reference; print the matrix.

    Exits 1 if any result is FAILED.
    """
    _register_user_backends(backend_files)
    names = _backend_list(backend_list)
    if cuda_sim:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    from convbench.harness.verify_report import run_matrix  # per command
    ok = run_matrix(cases, names, dtype, seed, click.echo)
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("image", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--backend", default="im2col", show_default=True)
@click.option("--out", "out_path", default="filters.png", show_default=True,
              type=click.Path(dir_okay=False))
def filters(image, backend, out_path):
    """Apply the classic 3x3 filters to IMAGE (default: matplotlib's sample photograph) and write
    one figure comparing zero padding with reflect padding, and a second (OUT-matrix.png) with a
    small convolution as one sparse matrix beside im2col's column matrix."""
    _backend_list(backend, "--backend")
    _out_file(out_path, "--out")
    try:
        written = gallery(image, out_path, backend)
    except (UnsupportedError, BackendUnavailableError) as e:
        raise _bad("--backend", f"{backend} cannot run the filters: {e}") from None
    except ValueError as e:
        raise _bad("IMAGE", str(e)) from None
    click.echo(f"wrote {written}")
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


def _workspace_limit(max_workspace: str | None) -> int | None:
    """--max-workspace in bytes (None: no limit)."""
    if max_workspace is None:
        return None
    try:
        return parse_bytes(max_workspace, "--max-workspace")
    except ValueError as e:
        raise _bad("--max-workspace", str(e)) from None


_MAX_WORKSPACE_HELP = ("auto chooses among the backends whose estimated scratch memory per call "
                       "fits this (e.g. 16M; default: no limit)")


def _memory_limit(max_memory: str | None) -> tuple[int | None, str]:
    """(bytes a case may plan to use, how that was set)."""
    if max_memory is not None:
        try:
            return parse_bytes(max_memory, "--max-memory"), "--max-memory"
        except ValueError as e:
            raise _bad("--max-memory", str(e)) from None
    avail = available_bytes()
    if avail is None:
        return None, "no limit: the available memory cannot be read here"
    return (int(DEFAULT_FRACTION * avail),
            f"{DEFAULT_FRACTION:.0%} of the {format_bytes(avail)} available now")


@main.command()
@click.option("--suite", "suite", default="quick", show_default=True,
              help="built-in suite (quick, resnet50, vgg16, mobilenet, deepbench-train, "
                   "deepbench-inference, deepbench-rnn, pooling, rnn, decoders), "
                   "fuzz[:SEED[:COUNT]], a file of descriptors, or an ONNX model (*.onnx)")
@click.option("--backends", "backend_list", default=None,
              help="comma-separated backends (default: every registered one)")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="batch size for every case")
@click.option("--direction", "direction", default="fwd", show_default=True,
              help="comma-separated: fwd, bwd-data, bwd-weights, bwd (all gradients), all")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="threads for Numba, BLAS and torch (at most the usable cores)")
@click.option("--oversubscribe", is_flag=True, help="allow --threads above the usable cores")
@click.option("--out", "out_dir", default=None, help="run directory (default runs/<suite>-<time>)")
@click.option("--resume", is_flag=True,
              help="keep the rows already in --out and skip them (same settings only)")
@click.option("--budget", type=_Finite(min=0, min_open=True), default=0.5, show_default=True,
              help="seconds of timed repetitions per case and backend")
@click.option("--limit", "per_case_limit", type=_Finite(min=0, min_open=True), default=30.0,
              show_default=True,
              help="skip a backend whose estimated time per call exceeds this (seconds)")
@click.option("--max-memory", default=None,
              help="skip a backend whose estimated memory for a case exceeds this (e.g. 8G; "
                   f"default {DEFAULT_FRACTION:.0%} of the memory available at the start)")
@click.option("--max-workspace", default=None, help=_MAX_WORKSPACE_HELP)
@click.option("--cold-cache", is_flag=True,
              help="rotate input copies larger than the last-level cache")
@click.option("--baseline", default=None,
              help="backend the report compares against (default torch)")
@click.option("--no-peaks", is_flag=True, help="skip measuring the machine's peaks (roofline)")
@click.option("--input-shape", "input_shapes", multiple=True,
              help="an ONNX model's input shape where it is dynamic: NAME:1,3,224,224, or "
                   "1,3,224,224 for its only input (repeat for several inputs)")
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="measure each case in this many worker processes, started afresh for the "
                   "run, one after another (their spread is what compare tests against; 1: in "
                   "this process)")
@_backend_files
@_cluster_options
def run(suite, backend_list, batch, direction, dtype, threads, oversubscribe, out_dir, resume,
        budget, per_case_limit, max_memory, max_workspace, cold_cache, baseline, no_peaks,
        input_shapes, processes, backend_files, cluster, tls_ca, tls_cert, tls_key, insecure):
    """Verify, then time, every case of a suite on every backend; write CSV, JSON and HTML."""
    from convbench.harness.report import (  # per command
        choose_baseline,
        peers_of,
        summary,
        whole_model,
    )
    from convbench.harness.runner import DIRECTIONS, RunConfig  # per command
    from convbench.harness.suites import is_model_file, load_suite  # per command

    _register_user_backends(backend_files)
    backends = _backend_list(backend_list) or backend_names()
    dirs = _names(direction, "--direction", [*DIRECTIONS, "all"], "direction")
    if "all" in dirs:
        dirs = list(DIRECTIONS)
    _check_threads(threads, oversubscribe)
    if cluster is not None and processes > 1:
        raise _bad("--processes", f"{processes} measures each case in worker processes of this "
                                  f"machine: not with --cluster, whose tasks measure a case once")
    threads = _local_threads(cluster, threads, oversubscribe)
    workers = _cluster(cluster, tls_ca, tls_cert, tls_key, insecure, threads, backend_files)
    if baseline is not None and baseline not in backends:
        raise _bad("--baseline", f"{baseline!r} is not one of the backends run "
                                 f"({', '.join(backends)})")
    max_bytes, limit_note = _memory_limit(max_memory)
    if workers is not None and max_memory is None:    # each worker's own memory, shared out
        shared = workers.address.workers or 1
        workers.memory_fraction = DEFAULT_FRACTION / shared
        limit_note = (f"on each worker {workers.memory_fraction:.0%} of the memory available "
                      f"there" + (f", shared out among {shared} local workers" if shared > 1
                                  else ""))
    ws_limit = _workspace_limit(max_workspace)
    try:
        cases = load_suite(suite, batch, list(input_shapes) or None)
    except (ValueError, OSError) as e:
        raise _bad("--suite", _one_line(e)) from None
    if resume and out_dir is None:
        raise _bad("--resume", "--resume needs --out (the run directory to continue)")
    out_dir = out_dir or (f"runs/{suite.replace('/', '_').replace(':', '_')}-"
                          f"{time.strftime('%Y%m%d-%H%M%S')}")
    _out_dir(out_dir)
    if "auto" in backends:
        from convbench.autotune import check_cache  # per command
        check_cache()
    policy = TimingPolicy(budget_s=budget, warmup_budget_s=min(budget, 0.5))
    cfg = RunConfig(suite, cases, backends, tuple(dirs), dtype, threads, policy, per_case_limit,
                    cold_cache, baseline, whole_model=is_model_file(suite), batch=batch,
                    max_bytes=max_bytes, processes=processes, workspace_limit=ws_limit)
    click.echo(f"suite {suite}: {len(cases)} cases x {len(backends)} backends -> {out_dir}"
               + (f" (each case in {processes} worker processes)" if processes > 1 else ""))
    click.echo(f"memory per case: "
               f"{format_bytes(max_bytes) if max_bytes else 'no limit'} ({limit_note})"
               if workers is None or max_memory is not None else f"memory per case: {limit_note}")
    if ws_limit is not None and "auto" in backends:
        click.echo(f"auto chooses among backends stating at most {format_bytes(ws_limit)} of "
                   f"scratch")
    _warn_blas()
    progress = _progress(lambda m, nl: click.echo(m, err=True, nl=nl))
    try:
        frame, meta = _run_suite(cfg, out_dir, resume, progress, no_peaks, workers)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: every finished row is kept in {out_dir} "
                   f"(continue with --resume --out {out_dir})", err=True)
        sys.exit(130)
    except OSError as e:
        click.echo("", err=True)               # after the progress line
        raise Failure(f"{_one_line(e)}: the rows finished so far are kept in {out_dir}; make "
                      f"room and continue with --resume --out {out_dir}") from e
    except Exception:
        click.echo("", err=True)
        raise
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


def _run_suite(cfg, out_dir, resume, progress, no_peaks, workers):
    """run_suite here, or on the cluster `workers` (opened first: its errors are --cluster's).
    The peaks of a remote cluster's machines are not this one's: they are left out."""
    from convbench.harness.cluster import ClusterError  # per command
    from convbench.harness.runner import run_suite  # per command
    if workers is None:
        return run_suite(cfg, out_dir, resume, progress, peaks=not no_peaks, warn=_warn)
    try:
        workers.__enter__()
    except ClusterError as e:
        raise _bad("--cluster", str(e)) from None
    try:
        click.echo(f"cluster {workers.address.text}: {len(workers.workers)} workers on "
                   f"{len({w['host'] for w in workers.workers.values()})} hosts")
        return run_suite(cfg, out_dir, resume, progress,
                         peaks=not no_peaks and workers.address.local, warn=_warn,
                         cluster=workers)
    except ClusterError as e:
        raise Failure(f"{e}: the rows finished so far are kept in {out_dir}") from None
    finally:
        workers.close()


def _report_baseline(rows, baseline: str | None) -> None:
    """An error unless `baseline` (when given) is a backend timed in `rows`."""
    from convbench.harness import table  # per command
    if baseline is None:
        return
    _backend_list(baseline, "--baseline")
    timed = sorted(set(table.timed(rows)["backend"]))
    if baseline not in timed:
        raise _bad("--baseline", f"{baseline!r} has no timed result in this run (timed: "
                                 f"{', '.join(timed) or 'none'})")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--baseline", default=None, help="backend to compare against (default torch)")
def report(run_dir, baseline):
    """(Re)write RUN_DIR/report.html from its results (an interrupted run's too, and from
    results.csv when results.json is missing or cannot be read)."""
    from convbench.harness.report import write_report  # per command
    from convbench.harness.runner import load_run  # per command
    rows, meta = load_run(run_dir, warn=_warn)
    _report_baseline(rows, baseline)
    click.echo(f"wrote {write_report(run_dir, rows, meta, baseline)}")


@main.command()
@click.argument("run_a", type=click.Path(exists=True, file_okay=False))
@click.argument("run_b", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--threshold", type=_Finite(min=0), default=0.10, show_default=True,
              help="relative change that counts (0.1: 10%)")
@click.option("--alpha", type=_Finite(min=0, max=1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="significance level, in (0, 1); the ratio's interval is "
                                      "at 1 - alpha")
@click.option("--noise-floor", type=_Finite(min=0), default=0.05, show_default=True,
              help="relative spread between processes assumed for a run made without "
                   "--processes (0.05: 5%)")
@click.option("--self-check", is_flag=True,
              help="A/A test of one run made with --processes 4 or more: its halves compared")
@click.option("--force", is_flag=True, help="compare runs from different machines or software")
@click.option("--html", "html_path", default=None, help="also write the comparison as HTML")
def compare(run_a, run_b, threshold, alpha, noise_floor, self_check, force, html_path):
    """Per-case ratios of RUN_B against RUN_A, with their intervals; exits 1 on a significant
    regression. With --self-check, RUN_A alone: the false alarms to expect on this machine."""
    from convbench.harness import compare as cmp  # per command
    from convbench.harness.runner import load_run  # per command
    if html_path:
        _out_file(html_path, "--html")
    rule = cmp.rule_text(threshold, alpha, noise_floor)
    if self_check:
        if run_b is not None:
            raise _bad("--self-check", f"takes one RUN_DIR, got two ({run_a!r} and {run_b!r})")
        rows, _ = load_run(run_a, warn=_warn)
        check = cmp.self_check(rows, threshold, alpha)
        click.echo(cmp.format_self_check(check, run_a, rule))
        if html_path:
            written = cmp.write_html(html_path, check.lines, [], "first half", "second half",
                                     rule)
            click.echo(f"wrote {written}")
        sys.exit(0)
    if run_b is None:
        raise click.UsageError("Missing argument 'RUN_B' (or give --self-check for the A/A "
                               "test of RUN_A alone).")
    lines, diffs = cmp.compare_runs(run_a, run_b, threshold, alpha, noise_floor, warn=_warn)
    if diffs and not force:
        raise Failure(f"{run_a} and {run_b} come from different machines or software "
                      f"({'; '.join(diffs)}): their timings do not compare (--force to compare "
                      f"them anyway)")
    click.echo(cmp.format_text(lines, diffs, "A", "B", rule))
    if html_path:
        click.echo(f"wrote {cmp.write_html(html_path, lines, diffs, run_a, run_b, rule)}")
    sys.exit(1 if len(cmp.regressions(lines)) else 0)


@main.command()
@click.option("--no-peaks", is_flag=True, help="skip measuring the peaks")
def info(no_peaks):
    """The machine fingerprint and its measured peaks (FMA and SGEMM GFLOP/s, copy GB/s)."""
    data = {"machine": fingerprint()}
    if not no_peaks:
        data["peaks"] = measure_peaks()
    click.echo(json.dumps(data, indent=1))
    _warn_blas()


@main.group()
def autotune():
    """backend="auto"'s cache of choices on this machine: show, clear or retune them."""


@autotune.command("show")
@click.option("--all", "all_machines", is_flag=True, help="every machine key in the cache")
def autotune_show(all_machines):
    """The cached choices: problem, backend, why, and each candidate's median time."""
    from convbench import autotune as at  # per command
    data, here = at.load_cache(), at.machine_key()
    click.echo(f"cache: {at.cache_path()}; this machine's key: {here}")
    for mkey, section in data.items():
        if not isinstance(section, dict) or (mkey != here and not all_machines):
            continue
        parts = section.get("machine") or {}
        click.echo(f"machine {mkey}{' (this one)' if mkey == here else ''}: "
                   f"{parts.get('cpu', '?')}, {parts.get('threads', '?')} threads, "
                   f"{parts.get('blas', '?')}, env {parts.get('env', '?')}")
        for key, entry in sorted(section.get("choices", {}).items()):
            times = ", ".join(f"{n} {t * 1e3:.3g} ms" for n, t in
                              sorted(entry.get("median_s", {}).items(), key=lambda kv: kv[1]))
            click.echo(f"  {key}: {entry.get('backend')} ({entry.get('why', '')}; "
                       f"{entry.get('rounds', '?')} rounds) [{times}]")
    others = [k for k in data if k != here]
    if others and not all_machines:
        click.echo(f"({len(others)} other machine key(s): --all shows them)")


@autotune.command("clear")
@click.option("--all", "all_machines", is_flag=True, help="every machine's choices")
def autotune_clear(all_machines):
    """Forget this machine's choices (or every machine's)."""
    from convbench import autotune as at  # per command
    click.echo(f"cleared {at.clear(all_machines)} choices from {at.cache_path()}")


@autotune.command("retune")
@click.option("--suite", default=None, help="time this suite's problems (default: the problems "
              "cached for this machine)")
@click.option("--batch", type=click.IntRange(min=1), default=None)
@click.option("--direction", default="fwd", show_default=True,
              help="with --suite: comma-separated directions, or all")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--budget", type=float, default=0.3, show_default=True,
              help="seconds of interleaved timing per problem, at most (the race stops earlier "
                   "once the fastest is clear)")
@click.option("--max-workspace", default=None, help="with --suite: " + _MAX_WORKSPACE_HELP)
def autotune_retune(suite, batch, direction, dtype, threads, budget, max_workspace):
    """Time the candidates again and replace the cached choices."""
    from convbench import autotune as at  # per command
    from convbench.harness.runner import DIRECTIONS, directions_for  # per command
    from convbench.harness.suites import load_suite  # per command
    if budget <= 0:
        raise _bad("--budget", f"{budget} must be > 0")
    ws_limit = _workspace_limit(max_workspace)
    _check_threads(threads, False)
    set_threads(threads)
    if suite is None:
        keys = at.cached_problems()
        for key in keys:
            try:
                click.echo(f"  {key}: {at.retune_key(key, budget)}")
            except UnsupportedError as e:
                click.echo(f"  {key}: {e}", err=True)
        click.echo(f"retuned {len(keys)} problem(s) into {at.cache_path()}")
        return
    else:
        dirs = _names(direction, "--direction", [*DIRECTIONS, "all"], "direction")
        dirs = list(DIRECTIONS) if "all" in dirs else dirs
        try:
            cases = load_suite(suite, batch)
        except (ValueError, OSError) as e:
            raise _bad("--suite", _one_line(e)) from None
        todo = [(op, c.problem, np.dtype(dtype)) for c in cases
                for op in directions_for(c.family, dirs)]
    for op, problem, dt in todo:
        try:
            entry = at.choose(op, problem, dt, budget_s=budget, retune=True,
                              workspace_limit=ws_limit)
        except UnsupportedError as e:
            click.echo(f"  {at.problem_key(op, problem, dt)}: {e}", err=True)
            continue
        click.echo(f"  {at.problem_key(op, problem, dt)}: {entry['backend']} ({entry['why']})")
    click.echo(f"retuned {len(todo)} problem(s) into {at.cache_path()}")


def _warn_blas():
    """On stderr, when the BLAS runs narrower vectors than the CPU (machine.blas_warning)."""
    warning = blas_warning()
    if warning:
        click.echo(f"warning: {warning}", err=True)


def _train_options(f):
    opts = [
        click.option("--data", default="digits", show_default=True,
                     help="digits (shipped with scikit-learn), mnist:PATH or cifar10:PATH"),
        click.option("--model", type=click.Choice(["small-cnn", "resnet-mini"]),
                     default="small-cnn", show_default=True),
        click.option("--optimizer", default="adam", show_default=True,
                     help="sgd, momentum, nesterov, adagrad, rmsprop, adam"),
        click.option("--lr", type=_Finite(min=0, min_open=True), default=2e-3, show_default=True),
        click.option("--momentum", type=_Finite(min=0), default=None),
        click.option("--weight-decay", type=_Finite(min=0), default=0.0, show_default=True),
        click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True),
        click.option("--patience", type=click.IntRange(min=1), default=6, show_default=True,
                     help="early stopping: epochs without a better validation loss"),
        click.option("--schedule", type=click.Choice(["constant", "step", "cosine"]),
                     default="cosine", show_default=True),
        click.option("--init", default="he_uniform", show_default=True,
                     help="xavier_uniform, xavier_normal, he_uniform, he_normal"),
        click.option("--dropout", type=_Finite(min=0, max=1, max_open=True), default=0.25,
                     show_default=True, help="in [0, 1)"),
        click.option("--no-augment", is_flag=True, help="no random shifts (or flips, for photos)"),
        click.option("--backend", default="auto", show_default=True,
                     help="auto (fastest verified per layer) or a backend name"),
        click.option("--max-workspace", default=None, help=_MAX_WORKSPACE_HELP),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="threads for Numba, BLAS and torch (at most the usable cores)"),
        click.option("--oversubscribe", is_flag=True,
                     help="allow --threads above the usable cores"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _option(field: str) -> str:
    """The option of a TrainConfig field: batch_size -> --batch-size."""
    return "--" + field.replace("_", "-")


def _config(kw):
    """The TrainConfig of the training options, validated; errors name their option."""
    from convbench.train import TrainConfig  # per command
    from convbench.train.trainer import ConfigError  # per command
    _check_threads(kw["threads"], kw.pop("oversubscribe"))
    set_threads(kw.pop("threads"))
    kw["augment"] = not kw.pop("no_augment")
    kw["workspace_limit"] = _workspace_limit(kw.pop("max_workspace"))
    cfg = TrainConfig(**kw)
    try:
        cfg.validate()
    except ConfigError as e:
        raise _bad(_option(e.field), str(e)) from None
    if cfg.backend == "auto":
        from convbench.autotune import check_cache  # per command
        check_cache()
    return cfg


@main.command()
@_train_options
@click.option("--out", "out_dir", default="runs/train", show_default=True)
@click.option("--resume", "resume", default=None, type=click.Path(exists=True, dir_okay=False),
              help="a checkpoint to continue from")
def train(out_dir, resume, **kw):
    """Train a small CNN on convbench's kernels; writes best.npz, log.csv, curves.png and
    summary.json."""
    from convbench.train import train as run_train  # per command
    from convbench.train.data import DataError  # per command
    from convbench.train.trainer import CheckpointError, ConfigError  # per command
    cfg = _config(kw)
    _out_dir(out_dir)
    try:
        s = run_train(cfg, out_dir, verbose=True, resume=resume, log=click.echo)
    except ConfigError as e:
        raise _bad(_option(e.field), str(e)) from None
    except CheckpointError as e:
        raise _bad("--resume", str(e)) from None
    except DataError as e:
        raise _bad("--data", str(e)) from None
    except OSError as e:
        best = Path(out_dir) / "best.npz"
        kept = (f"the best checkpoint so far is whole in {best}" if best.exists() else
                "no checkpoint was written")
        raise Failure(f"{_one_line(e)}; {kept}") from e
    if s["diverged"]:
        kept = (f"the best checkpoint (epoch {s['best_epoch']}) is kept in {out_dir}/best.npz"
                if s["best_epoch"] else "no epoch finished, so no checkpoint was written")
        raise click.ClickException(f"training stopped: {s['diverged']}; {kept}")
    click.echo(f"test accuracy {s['test_accuracy']:.4f} (best epoch {s['best_epoch']} of "
               f"{s['epochs_run']}) in {s['seconds']:.1f} s; mean epoch {s['mean_epoch_s']:.3f} s")
    click.echo(f"wrote {out_dir}/summary.json, best.npz, log.csv, curves.png")


def _floats(value: str, option: str) -> list[float]:
    """Comma-separated finite numbers > 0."""
    out = []
    for v in _names(value, option, what="value"):
        try:
            f = float(v)
        except ValueError:
            raise _bad(option, f"{v!r} is not a number") from None
        if not (math.isfinite(f) and f > 0):
            raise _bad(option, f"{v!r} must be a finite number > 0")
        out.append(f)
    return out


@main.command()
@_train_options
@click.option("--mode", type=click.Choice(["random", "grid"]), default="random", show_default=True)
@click.option("--trials", type=click.IntRange(min=1), default=6, show_default=True,
              help="random search trials")
@click.option("--lrs", default="3e-4,3e-3", show_default=True,
              help="random: low,high of a log-uniform range; grid: the values")
@click.option("--optimizers", default="adam,rmsprop,nesterov", show_default=True)
@click.option("--out", "out_dir", default="runs/tune", show_default=True)
@_cluster_options
def tune(mode, trials, lrs, optimizers, out_dir, cluster, tls_ca, tls_cert, tls_key, insecure,
         **kw):
    """Random or grid search over learning rate and optimiser; writes tune.csv, best first, and
    the best trial's checkpoint best.npz."""
    from convbench.train import tune as run_tune  # per command
    from convbench.train.trainer import ConfigError  # per command
    threads = _local_threads(cluster, kw["threads"], kw["oversubscribe"])
    workers = _cluster(cluster, tls_ca, tls_cert, tls_key, insecure, threads)
    base = _config(kw)
    lr_values = _floats(lrs, "--lrs")
    if mode == "random" and (len(lr_values) != 2 or lr_values[0] >= lr_values[1]):
        raise _bad("--lrs", f"{lrs!r}: random search takes low,high with low < high")
    names = _names(optimizers, "--optimizers", what="optimizer")
    for name in names:
        try:
            dataclasses.replace(base, optimizer=name).validate()
        except ConfigError as e:
            raise _bad("--optimizers", str(e)) from None
    space = {"optimizer": names, "lr": tuple(lr_values) if mode == "random" else lr_values}
    _out_dir(out_dir)
    if workers is None:
        results = run_tune(base, space, mode, trials, base.seed, out_dir, log=click.echo)
    else:
        from convbench.harness.cluster import ClusterError  # per command
        try:
            with workers:
                click.echo(f"cluster {workers.address.text}: {len(workers.workers)} workers")
                results = run_tune(base, space, mode, trials, base.seed, out_dir,
                                   log=click.echo, map_trials=workers.map)
        except ClusterError as e:
            raise _bad("--cluster", str(e)) from None
    click.echo(f"best: {results[0]}")
    click.echo(f"wrote {out_dir}/tune.csv" + (", best.npz" if (Path(out_dir) / "best.npz")
                                               .exists() else ""))


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
def evaluate(checkpoint):
    """Test accuracy of a checkpoint on its run's held-out test split."""
    from convbench.train import evaluate_checkpoint  # per command
    from convbench.train.data import DataError  # per command
    from convbench.train.trainer import CheckpointError  # per command
    try:
        click.echo(json.dumps(evaluate_checkpoint(checkpoint), indent=1))
    except (CheckpointError, DataError) as e:
        raise _bad("CHECKPOINT", str(e)) from None


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
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def inspect_command(checkpoint, out_dir, image_index, channels, steps, backend, seed):
    """What a trained model learned: first-layer filters against the classic 3x3 filters,
    feature maps, images that maximise a channel, translation equivariance and parameter
    counts; writes PNGs and inspect.json, and adds them to the run's index.html."""
    from convbench.train.data import DataError  # per command
    from convbench.train.inspection import inspect_checkpoint  # per command
    from convbench.train.trainer import CheckpointError  # per command
    _backend_list(backend, "--backend")
    if out_dir is not None:
        _out_dir(out_dir)
    try:
        r = inspect_checkpoint(checkpoint, out_dir, image_index=image_index, channels=channels,
                               steps=steps, backend=backend, seed=seed, log=click.echo)
    except (CheckpointError, DataError) as e:
        raise _bad("CHECKPOINT", str(e)) from None
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
