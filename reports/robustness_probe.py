"""Try convbench's command line as a hostile user would: bad input, interrupts, kills, a full disk,
concurrent runs. Each probe runs `python -m convbench.cli ...` from a source tree in a scratch
folder and records the exit status, whether a traceback was printed, the message, and (where data
could be lost or silently wrong) a check of the files left behind.

    python reports/robustness_probe.py --root SOURCE_TREE --json OUT.json [--only ID,ID]
    python reports/robustness_probe.py --render BEFORE.json AFTER.json > reports/robustness.md

Full-disk probes mount a small tmpfs and need root; they are recorded as not run otherwise.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = "mb1ic4ih8oc4kh3ph1\nmax:mb1ic2ih8kh2\n"
SUITE_OTHER = "mb1ic2ih6oc2kh3ph1\n"
SUITE_SLOW = "".join(f"mb2ic{c}ih16oc8kh3ph1\n" for c in range(4, 28))
SLOW_ROWS = 24 * 2          # rows of one complete run of SUITE_SLOW on two conv backends
RUN = ["--budget", "0.02", "--no-peaks", "--backends", "im2col,numpy"]
TRAIN = ["--epochs", "2", "--backend", "im2col", "--patience", "5"]


class Ctx:
    def __init__(self, root: Path, work: Path):
        self.root, self.work = root, work
        self.env = {**os.environ, "PYTHONPATH": str(root),
                    "CONVBENCH_CACHE_DIR": str(work / "cache"), "PYTHONWARNINGS": "ignore"}
        self.env.pop("NUMBA_ENABLE_CUDASIM", None)

    def p(self, *parts) -> Path:
        return self.work.joinpath(*parts)

    def write(self, name, text) -> Path:
        path = self.p(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    def argv(self, args):
        return [sys.executable, "-m", "convbench.cli", *map(str, args)]

    def cli(self, args, timeout=600, env=None):
        self.last_cmd = "convbench " + " ".join(
            a if a and " " not in a else repr(a) for a in map(str, args))
        t0 = time.time()
        r = subprocess.run(self.argv(args), cwd=self.work, env={**self.env, **(env or {})},
                           capture_output=True, text=True, timeout=timeout)
        return {"rc": r.returncode, "out": r.stdout, "err": r.stderr, "s": time.time() - t0}

    def start(self, args):
        # a shell's background job ignores Ctrl-C (SIGINT); the run should hear it as a user's
        return subprocess.Popen(self.argv(args), cwd=self.work, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    # fixtures, made once per tree
    def suite(self, text=SUITE, name="suite.txt") -> Path:
        path = self.p(name)
        if not path.exists():
            self.write(name, text)
        return path

    def good_run(self, name="good") -> Path:
        path = self.p(name)
        if not (path / "results.csv").exists():
            r = self.cli(["run", "--suite", self.suite(), "--out", path, *RUN])
            assert r["rc"] == 0, r
        return path

    def copy_run(self, name) -> Path:
        dst = self.p(name)
        shutil.copytree(self.good_run(), dst)
        return dst

    def checkpoint(self) -> Path:
        path = self.p("trained", "best.npz")
        if not path.exists():
            r = self.cli(["train", *TRAIN, "--out", path.parent])
            assert r["rc"] == 0, r
        return path


def digest(path: Path) -> str:
    h = hashlib.sha1()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def csv_rows(path: Path):
    """Rows of a results.csv as pandas reads them, or a note why it cannot be read."""
    import pandas as pd
    try:
        return len(pd.read_csv(path))
    except Exception as e:  # noqa: BLE001 - the probe reports whatever happens
        return f"unreadable ({type(e).__name__})"


def incomplete_rows(path: Path):
    """Rows of a results.csv missing one of the columns every whole row has (flops, bytes and
    intensity, the last column)."""
    import pandas as pd
    try:
        f = pd.read_csv(path)
        return int(f[["flops", "bytes", "intensity"]].isna().any(axis=1).sum())
    except Exception as e:  # noqa: BLE001
        return f"unreadable ({type(e).__name__})"


def tinyfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


def untinyfs(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


PROBES = []


def probe(pid, title, args=None):
    """Register a probe: `args` (a function of ctx returning the CLI arguments) or a decorated
    function of ctx returning {"rc", "out", "err"} and optionally "note"."""
    def deco(fn):
        PROBES.append((pid, title, fn))
        return fn
    if args is not None:
        PROBES.append((pid, title, lambda ctx: ctx.cli(args(ctx))))
        return None
    return deco


# --- run: the suite and option values --------------------------------------------------------
probe("run-unknown-suite", "an unknown suite name",
      lambda c: ["run", "--suite", "resnet51", "--out", c.p("o"), *RUN])
probe("run-empty-suite", "an empty suite file",
      lambda c: ["run", "--suite", c.write("empty.txt", ""), "--out", c.p("o"), *RUN])
probe("run-comment-suite", "a suite file of comments only",
      lambda c: ["run", "--suite", c.write("comments.txt", "# nothing\n\n"), "--out", c.p("o"),
                 *RUN])
probe("run-bad-descriptor", "a suite line that is not a descriptor",
      lambda c: ["run", "--suite", c.write("bad.txt", "mb1ic4ih8oc4kh3\nhello world\n"),
                 "--out", c.p("o"), *RUN])
probe("run-suite-dir", "a folder as the suite",
      lambda c: ["run", "--suite", c.work, "--out", c.p("o"), *RUN])
probe("run-binary-suite", "a binary file as the suite",
      lambda c: ["run", "--suite", c.write("suite.bin", bytes(range(256)) * 4), "--out",
                 c.p("o"), *RUN])
probe("run-csv-no-column", "a suite CSV without a descriptor column",
      lambda c: ["run", "--suite", c.write("s.csv", "a,b\n1,2\n"), "--out", c.p("o"), *RUN])
probe("run-csv-deepbench-text", "a DeepBench-column CSV with text in a number column",
      lambda c: ["run", "--suite", c.write("db.csv", "N,C,H,W,K,R,S\n1,x,8,8,4,3,3\n"),
                 "--out", c.p("o"), *RUN])
probe("run-fuzz-zero", "fuzz:0:0 (an empty fuzz suite)",
      lambda c: ["run", "--suite", "fuzz:0:0", "--out", c.p("o"), *RUN])
probe("run-fuzz-text", "fuzz:abc",
      lambda c: ["run", "--suite", "fuzz:abc", "--out", c.p("o"), *RUN])
probe("run-fuzz-negative", "fuzz:0:-3",
      lambda c: ["run", "--suite", "fuzz:0:-3", "--out", c.p("o"), *RUN])
probe("run-backends-empty", "--backends \"\"",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), "--budget", "0.02",
                 "--no-peaks", "--backends", ""])
probe("run-backends-commas", "--backends \",\"",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), "--budget", "0.02",
                 "--no-peaks", "--backends", ","])
probe("run-backend-unknown", "--backends cudnn",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), "--budget", "0.02",
                 "--no-peaks", "--backends", "cudnn"])
probe("run-direction-empty", "--direction \"\"",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), *RUN, "--direction", ""])
probe("run-direction-unknown", "--direction sideways",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), *RUN, "--direction", "sideways"])
probe("run-batch-zero", "--batch 0",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), *RUN, "--batch", "0"])
probe("run-batch-negative", "--batch -2",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), *RUN, "--batch", "-2"])
probe("run-threads-zero", "--threads 0",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), *RUN, "--threads", "0"])
probe("run-threads-over", "--threads 64 (more than the usable cores)",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), *RUN, "--threads", "64"])
probe("run-threads-oversubscribe", "--threads 64 --oversubscribe",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), *RUN, "--threads", "64",
                 "--oversubscribe"])
probe("run-budget-zero", "--budget 0",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), "--no-peaks", "--budget", "0"])
probe("run-budget-nan", "--budget nan",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), "--no-peaks", "--budget", "nan"])
probe("run-limit-negative", "--limit -5",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), *RUN, "--limit", "-5"])
probe("run-limit-nan", "--limit nan",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), *RUN, "--limit", "nan"])
probe("run-baseline-unknown", "--baseline nope",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), *RUN, "--baseline", "nope"])
probe("run-out-file", "--out an existing file",
      lambda c: ["run", "--suite", c.suite(), "--out", c.write("afile", "x"), *RUN])
probe("run-out-under-file", "--out below a file (/dev/null/run)",
      lambda c: ["run", "--suite", c.suite(), "--out", "/dev/null/run", *RUN])
probe("run-max-memory-text", "--max-memory lots",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), *RUN, "--max-memory", "lots"])
probe("run-max-memory-negative", "--max-memory -1G",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), *RUN, "--max-memory", "-1G"])
probe("run-dtype", "--dtype float16",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), *RUN, "--dtype", "float16"])
probe("run-resume-no-out", "--resume without --out",
      lambda c: ["run", "--suite", c.suite(), "--resume", *RUN])
probe("cli-unknown-command", "an unknown command",
      lambda c: ["bench"])


@probe("run-out-readonly", "--out on a read-only file system")
def _(c):
    path = c.p("ro")
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)],
                       capture_output=True)
    if r.returncode:
        return {"rc": None, "out": "", "err": "", "note": "not run (mount needs root)"}
    try:
        return c.cli(["run", "--suite", c.suite(), "--out", path / "run", *RUN])
    finally:
        untinyfs(path)


@probe("run-huge-case", "a case far too large for memory, then a small one")
def _(c):
    suite = c.write("huge.txt", "mb4096ic4096ih1024oc4096kh3ph1\nmb1ic4ih8oc4kh3ph1\n")
    r = c.cli(["run", "--suite", suite, "--out", c.p("o"), *RUN])
    rows = csv_rows(c.p("o", "results.csv"))
    r["note"] = f"results.csv rows: {rows}"
    return r


@probe("run-max-memory-small", "--max-memory 2K (every case over the limit)")
def _(c):
    r = c.cli(["run", "--suite", c.suite(), "--out", c.p("o"), *RUN, "--max-memory", "2K"])
    if c.p("o", "results.csv").exists():
        import pandas as pd
        f = pd.read_csv(c.p("o", "results.csv"))
        r["note"] = "statuses: " + ", ".join(f"{k} {v}" for k, v in
                                             f["status"].value_counts().items())
    return r


# --- run: resume ---------------------------------------------------------------------------------
def _resume_mismatch(c, name, extra, suite=None):
    run = c.copy_run(name)
    before = digest(run)
    r = c.cli(["run", "--suite", suite or c.suite(), "--out", run, "--resume", *RUN, *extra])
    r["note"] = "folder unchanged" if digest(run) == before else "folder CHANGED"
    return r


@probe("resume-other-suite", "--resume into a folder made by another suite")
def _(c):
    return _resume_mismatch(c, "rs", [], suite=c.suite(SUITE_OTHER, "other.txt"))


@probe("resume-other-backends", "--resume with other --backends")
def _(c):
    return _resume_mismatch(c, "rb", ["--backends", "im2col"])


@probe("resume-other-batch", "--resume with another --batch")
def _(c):
    return _resume_mismatch(c, "rn", ["--batch", "2"])


@probe("resume-other-dtype", "--resume with another --dtype")
def _(c):
    return _resume_mismatch(c, "rd", ["--dtype", "float64"])


@probe("resume-garbage-csv", "--resume on a results.csv of garbage")
def _(c):
    run = c.copy_run("rg")
    (run / "results.csv").write_bytes(b"\x00\x01garbage,,\n\xff\xfe\n" * 20)
    before = (run / "results.csv").read_bytes()
    r = c.cli(["run", "--suite", c.suite(), "--out", run, "--resume", *RUN])
    r["note"] = ("results.csv untouched" if (run / "results.csv").read_bytes() == before
                 else "results.csv APPENDED TO")
    return r


@probe("resume-cut-line", "--resume after a kill mid-write (results.csv cut mid-line)")
def _(c):
    run = c.copy_run("rc")
    data = (run / "results.csv").read_bytes()
    expected = csv_rows(run / "results.csv")
    (run / "results.csv").write_bytes(data[:-40])
    r = c.cli(["run", "--suite", c.suite(), "--out", run, "--resume", *RUN])
    r["note"] = (f"rows after: {csv_rows(run / 'results.csv')} (complete run: {expected}), "
                 f"{incomplete_rows(run / 'results.csv')} incomplete")
    return r


@probe("resume-text-csv", "--resume on a results.csv of text that is not convbench's")
def _(c):
    run = c.copy_run("rt")
    (run / "results.csv").write_text("name,value\nfoo,1\nbar,2\n")
    before = (run / "results.csv").read_bytes()
    r = c.cli(["run", "--suite", c.suite(), "--out", run, "--resume", *RUN])
    r["note"] = ("results.csv untouched" if (run / "results.csv").read_bytes() == before
                 else "results.csv APPENDED TO")
    return r


@probe("resume-locked", "--resume into a folder a live run holds")
def _(c):
    suite = c.suite(SUITE_SLOW, "slow.txt")
    out = c.p("rl")
    args = ["run", "--suite", suite, "--out", out, "--budget", "0.3", "--no-peaks",
            "--backends", "im2col,numba-cpu"]
    a = c.start(args)
    _wait_rows(out / "results.csv", a)
    b = c.cli([*args, "--resume"])
    a.communicate(timeout=600)
    b["note"] = f"first run exit {a.returncode}, rows {csv_rows(out / 'results.csv')}"
    return b


@probe("resume-corrupt-meta", "--resume with a corrupt meta.json")
def _(c):
    run = c.copy_run("rm")
    (run / "meta.json").write_text("{not json")
    return c.cli(["run", "--suite", c.suite(), "--out", run, "--resume", *RUN])


@probe("resume-no-meta", "--resume into a folder with results.csv but no meta.json")
def _(c):
    run = c.copy_run("rnm")
    (run / "meta.json").unlink()
    return c.cli(["run", "--suite", c.suite(), "--out", run, "--resume", *RUN])


@probe("resume-empty-folder", "--resume into a folder that does not exist yet")
def _(c):
    return c.cli(["run", "--suite", c.suite(), "--out", c.p("fresh"), "--resume", *RUN])


@probe("resume-same", "--resume of a finished run with the same settings")
def _(c):
    run = c.copy_run("rsame")
    r = c.cli(["run", "--suite", c.suite(), "--out", run, "--resume", *RUN])
    r["note"] = f"rows: {csv_rows(run / 'results.csv')}"
    return r


# --- run: faults ---------------------------------------------------------------------------------
def _wait_rows(path: Path, proc, rows=1, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") > rows:
            return True
        time.sleep(0.2)
    return False


@probe("run-concurrent", "two runs at once into the same --out")
def _(c):
    suite = c.suite(SUITE_SLOW, "slow.txt")
    out = c.p("conc")
    args = ["run", "--suite", suite, "--out", out, "--budget", "0.3", "--no-peaks",
            "--backends", "im2col,numpy,numba-cpu"]
    a = c.start(args)
    _wait_rows(out / "results.csv", a)
    b = c.cli(args)
    a_out, a_err = a.communicate(timeout=600)
    rows = csv_rows(out / "results.csv")
    both = "TWO RUNS WROTE INTO ONE FOLDER; " if a.returncode == 0 and b["rc"] == 0 else ""
    b["note"] = (f"{both}first run exit {a.returncode}; results.csv rows {rows} "
                 f"(one run makes {24 * 3})")
    return b


@probe("run-stale-lock", "a stale lock (its process is gone, same host)")
def _(c):
    out = c.p("stale")
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    return c.cli(["run", "--suite", c.suite(), "--out", out, *RUN])


@probe("run-foreign-lock", "a lock held by a process on another host")
def _(c):
    out = c.p("foreign")
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    return c.cli(["run", "--suite", c.suite(), "--out", out, *RUN])


@probe("run-sigint", "Ctrl-C during a run, then --resume")
def _(c):
    suite = c.suite(SUITE_SLOW, "slow.txt")
    out = c.p("int")
    args = ["run", "--suite", suite, "--out", out, "--budget", "0.3", "--no-peaks",
            "--backends", "im2col,numba-cpu"]
    a = c.start(args)
    _wait_rows(out / "results.csv", a, rows=2)
    running = a.poll() is None
    a.send_signal(signal.SIGINT)
    a_out, a_err = a.communicate(timeout=300)
    kept = csv_rows(out / "results.csv")
    r = c.cli([*args, "--resume"])
    r["note"] = (f"{'signalled while running' if running else 'FINISHED BEFORE THE SIGNAL'}: "
                 f"exit {a.returncode}, rows kept {kept}; resume rows "
                 f"{csv_rows(out / 'results.csv')} (complete: {SLOW_ROWS})")
    return r


@probe("run-sigkill", "kill -9 during a run, then --resume")
def _(c):
    suite = c.suite(SUITE_SLOW, "slow.txt")
    out = c.p("kill")
    args = ["run", "--suite", suite, "--out", out, "--budget", "0.3", "--no-peaks",
            "--backends", "im2col,numba-cpu"]
    a = c.start(args)
    _wait_rows(out / "results.csv", a, rows=2)
    running = a.poll() is None
    a.kill()
    a.communicate()
    with open(out / "results.csv", "rb+") as f:      # a kill in the middle of a row
        f.seek(0, 2)
        f.truncate(max(0, f.tell() - 25))
    r = c.cli([*args, "--resume"])
    r["note"] = (f"{'killed while running' if running else 'FINISHED BEFORE THE KILL'}; rows "
                 f"after resume: {csv_rows(out / 'results.csv')} (complete: {SLOW_ROWS}), "
                 f"{incomplete_rows(out / 'results.csv')} incomplete")
    return r


@probe("run-full-disk", "a full disk during a run (64 KiB tmpfs)")
def _(c):
    mnt = c.p("fullrun")
    if not tinyfs(mnt, "64k"):
        return {"rc": None, "out": "", "err": "", "note": "not run (mount needs root)"}
    try:
        suite = c.suite(SUITE_SLOW, "slow.txt")
        r = c.cli(["run", "--suite", suite, "--out", mnt / "run", "--budget", "0.3",
                   "--no-peaks", "--backends", "im2col,numba-cpu"])
        r["note"] = f"rows readable afterwards: {csv_rows(mnt / 'run' / 'results.csv')}"
        return r
    finally:
        untinyfs(mnt)


@probe("run-cache-list", "an autotune cache of valid JSON but the wrong shape (a list)")
def _(c):
    c.write("badcache/autotune.json", "[1, 2, 3]")
    return c.cli(["run", "--suite", c.suite(), "--out", c.p("o"), "--budget", "0.02",
                  "--no-peaks", "--backends", "auto"],
                 env={"CONVBENCH_CACHE_DIR": str(c.p("badcache"))})


@probe("run-cache-nested", "an autotune cache whose entries are not objects")
def _(c):
    from_key = subprocess.run(
        [sys.executable, "-c", "from convbench.autotune import machine_key; print(machine_key())"],
        cwd=c.work, env=c.env, capture_output=True, text=True).stdout.strip()
    c.write("badcache2/autotune.json", json.dumps({from_key: ["not", "a", "dict"]}))
    return c.cli(["run", "--suite", c.suite(), "--out", c.p("o"), "--budget", "0.02",
                  "--no-peaks", "--backends", "auto"],
                 env={"CONVBENCH_CACHE_DIR": str(c.p("badcache2"))})


# --- verify --------------------------------------------------------------------------------------
probe("verify-unknown-cases", "verify --cases bogus", lambda c: ["verify", "--cases", "bogus"])
probe("verify-backends-empty", "verify --backends \"\"",
      lambda c: ["verify", "--cases", "pool-edge", "--backends", ""])
probe("verify-backend-unknown", "verify --backends cudnn",
      lambda c: ["verify", "--cases", "pool-edge", "--backends", "cudnn"])
probe("verify-seed-negative", "verify --seed -1",
      lambda c: ["verify", "--cases", "conv-random", "--backends", "im2col", "--seed", "-1"])
probe("verify-nonfinite", "verify --cases nonfinite (NaN and +-inf inputs) on the CPU backends",
      lambda c: ["verify", "--cases", "nonfinite", "--backends",
                 "naive,numpy,im2col,fft,winograd-f2,winograd-f4,numba-cpu,torch"])


# --- report and compare --------------------------------------------------------------------------
@probe("report-empty-folder", "report on an empty folder")
def _(c):
    c.p("empty").mkdir()
    return c.cli(["report", c.p("empty")])


probe("report-missing-folder", "report on a folder that does not exist",
      lambda c: ["report", c.p("nowhere")])


@probe("report-corrupt-json", "report with a corrupt results.json (results.csv complete)")
def _(c):
    run = c.copy_run("pj")
    (run / "results.json").write_text('{"meta": {"suite": ')
    return c.cli(["report", run])


@probe("report-json-list", "report with a results.json of valid JSON but the wrong shape")
def _(c):
    run = c.copy_run("pl")
    (run / "results.json").write_text("[1, 2, 3]")
    return c.cli(["report", run])


@probe("report-json-missing", "report with results.json deleted")
def _(c):
    run = c.copy_run("pm")
    (run / "results.json").unlink()
    return c.cli(["report", run])


@probe("report-garbage-csv", "report on a folder whose only results.csv is garbage")
def _(c):
    run = c.p("pg")
    run.mkdir()
    (run / "results.csv").write_text("this is,not\na results file\n")
    return c.cli(["report", run])


@probe("report-baseline-unknown", "report --baseline nope")
def _(c):
    return c.cli(["report", c.copy_run("pb"), "--baseline", "nope"])


@probe("report-full-disk", "report when the disk is full (results in a 48 KiB tmpfs)")
def _(c):
    good = c.good_run()
    mnt = c.p("fullreport")
    if not tinyfs(mnt, "48k"):
        return {"rc": None, "out": "", "err": "", "note": "not run (mount needs root)"}
    try:
        for name in ("results.csv", "meta.json", "samples.jsonl"):
            shutil.copy(good / name, mnt / name)
        r = c.cli(["report", mnt])
        left = sorted(f.name for f in mnt.iterdir())
        r["note"] = f"files left: {', '.join(left)}"
        return r
    finally:
        untinyfs(mnt)


@probe("compare-nothing-common", "compare two runs with no case in common")
def _(c):
    other = c.p("other-run")
    c.cli(["run", "--suite", c.suite(SUITE_OTHER, "other.txt"), "--out", other, *RUN])
    return c.cli(["compare", c.good_run(), other])


probe("compare-alpha-five", "compare --alpha 5",
      lambda c: ["compare", c.good_run(), c.good_run(), "--alpha", "5"])
probe("compare-alpha-zero", "compare --alpha 0",
      lambda c: ["compare", c.good_run(), c.good_run(), "--alpha", "0"])
probe("compare-threshold-negative", "compare --threshold -1",
      lambda c: ["compare", c.good_run(), c.good_run(), "--threshold", "-1"])
probe("compare-html-missing-dir", "compare --html into a folder that does not exist",
      lambda c: ["compare", c.good_run(), c.good_run(), "--html", c.p("no", "dir", "c.html")])


@probe("compare-corrupt-json", "compare where one run's results.json is corrupt")
def _(c):
    run = c.copy_run("cj")
    (run / "results.json").write_text("{")
    return c.cli(["compare", c.good_run(), run, "--threshold", "10"])


@probe("compare-empty-folder", "compare with an empty folder")
def _(c):
    c.p("empty2").mkdir()
    return c.cli(["compare", c.good_run(), c.p("empty2")])


# --- filters -------------------------------------------------------------------------------------
probe("filters-text-image", "filters on a text file",
      lambda c: ["filters", c.write("notes.txt", "not an image\n"), "--out", c.p("f.png")])
probe("filters-empty-image", "filters on an empty .png",
      lambda c: ["filters", c.write("empty.png", b""), "--out", c.p("f.png")])
probe("filters-backend-unknown", "filters --backend bogus",
      lambda c: ["filters", "--backend", "bogus", "--out", c.p("f.png")])
probe("filters-backend-unsupported", "filters --backend winograd-f4 (no depthwise)",
      lambda c: ["filters", "--backend", "winograd-f4", "--out", c.p("f.png")])
probe("filters-out-missing-dir", "filters --out into a folder that does not exist",
      lambda c: ["filters", "--out", c.p("no", "dir", "f.png")])


# --- train and tune ------------------------------------------------------------------------------
def _train(c, *extra):
    return c.cli(["train", *TRAIN, "--out", c.p("t"), *extra])


probe("train-lr-inf", "train --lr inf", lambda c: ["train", *TRAIN, "--out", c.p("t"),
                                                   "--lr", "inf"])
probe("train-lr-nan", "train --lr nan", lambda c: ["train", *TRAIN, "--out", c.p("t"),
                                                   "--lr", "nan"])
probe("train-lr-negative", "train --lr -1", lambda c: ["train", *TRAIN, "--out", c.p("t"),
                                                       "--lr", "-1"])
probe("train-dropout-high", "train --dropout 1.5",
      lambda c: ["train", *TRAIN, "--out", c.p("t"), "--dropout", "1.5"])
probe("train-dropout-one", "train --dropout 1",
      lambda c: ["train", *TRAIN, "--out", c.p("t"), "--dropout", "1"])
probe("train-dropout-negative", "train --dropout -0.1",
      lambda c: ["train", *TRAIN, "--out", c.p("t"), "--dropout", "-0.1"])
probe("train-init-unknown", "train --init bogus",
      lambda c: ["train", *TRAIN, "--out", c.p("t"), "--init", "bogus"])
probe("train-init-zeros", "train --init zeros",
      lambda c: ["train", *TRAIN, "--out", c.p("t"), "--init", "zeros"])
probe("train-data-imagenet", "train --data imagenet",
      lambda c: ["train", *TRAIN, "--out", c.p("t"), "--data", "imagenet"])
probe("train-mnist-missing", "train --data mnist:/nonexistent",
      lambda c: ["train", *TRAIN, "--out", c.p("t"), "--data", "mnist:/nonexistent"])
probe("train-cifar-missing", "train --data cifar10:/nonexistent",
      lambda c: ["train", *TRAIN, "--out", c.p("t"), "--data", "cifar10:/nonexistent"])
probe("train-mnist-empty-path", "train --data mnist:",
      lambda c: ["train", *TRAIN, "--out", c.p("t"), "--data", "mnist:"])
probe("train-mnist-garbage", "train --data mnist:DIR holding files that are not IDX",
      lambda c: ["train", *TRAIN, "--out", c.p("t"), "--data",
                 f"mnist:{c.write('mn/train-images-idx3-ubyte', 'hello').parent}"])
probe("train-optimizer-unknown", "train --optimizer bogus",
      lambda c: ["train", *TRAIN, "--out", c.p("t"), "--optimizer", "bogus"])
probe("train-epochs-zero", "train --epochs 0",
      lambda c: ["train", "--backend", "im2col", "--out", c.p("t"), "--epochs", "0"])
probe("train-batch-huge", "train --batch-size 100000",
      lambda c: ["train", *TRAIN, "--out", c.p("t"), "--batch-size", "100000"])
probe("train-backend-unknown", "train --backend bogus",
      lambda c: ["train", "--epochs", "2", "--out", c.p("t"), "--backend", "bogus"])
probe("train-momentum-nan", "train --optimizer momentum --momentum nan",
      lambda c: ["train", *TRAIN, "--out", c.p("t"), "--optimizer", "momentum",
                 "--momentum", "nan"])
probe("train-weight-decay-negative", "train --weight-decay -1",
      lambda c: ["train", *TRAIN, "--out", c.p("t"), "--weight-decay", "-1"])
probe("train-patience-zero", "train --patience 0",
      lambda c: ["train", "--epochs", "2", "--backend", "im2col", "--out", c.p("t"),
                 "--patience", "0"])
probe("train-threads-over", "train --threads 64",
      lambda c: ["train", *TRAIN, "--out", c.p("t"), "--threads", "64"])
probe("train-out-file", "train --out an existing file",
      lambda c: ["train", *TRAIN, "--out", c.write("tfile", "x")])


@probe("train-lr-diverge", "train --optimizer sgd --lr 1000 (the loss turns NaN)")
def _(c):
    r = c.cli(["train", "--epochs", "4", "--backend", "im2col", "--out", c.p("div"),
               "--optimizer", "sgd", "--lr", "1000", "--schedule", "constant"])
    best = c.p("div", "best.npz")
    r["note"] = f"best.npz: {best.stat().st_size if best.exists() else 'missing'} bytes"
    return r


@probe("train-resume-text", "train --resume a text file named .npz")
def _(c):
    return _train(c, "--resume", c.write("text.npz", "not a checkpoint\n"))


@probe("train-resume-truncated", "train --resume a truncated checkpoint")
def _(c):
    data = c.checkpoint().read_bytes()
    return _train(c, "--resume", c.write("cut.npz", data[: len(data) // 2]))


@probe("train-resume-foreign", "train --resume an .npz that is not a checkpoint")
def _(c):
    import numpy as np
    path = c.p("foreign.npz")
    np.savez(path, a=np.arange(3))
    return _train(c, "--resume", path)


@probe("train-resume-fewer-epochs", "train --resume with fewer --epochs than the checkpoint")
def _(c):
    r = c.cli(["train", "--epochs", "1", "--backend", "im2col", "--out", c.p("t2"),
               "--resume", c.checkpoint()])
    s = c.p("t2", "summary.json")
    r["note"] = f"summary.json {'written' if s.exists() else 'not written'}"
    return r


@probe("train-full-disk", "a full disk during training (300 KiB tmpfs: less than a checkpoint)")
def _(c):
    mnt = c.p("fulltrain")
    if not tinyfs(mnt, "300k"):
        return {"rc": None, "out": "", "err": "", "note": "not run (mount needs root)"}
    try:
        r = c.cli(["train", "--epochs", "4", "--backend", "im2col", "--out", mnt / "t"])
        best = mnt / "t" / "best.npz"
        size = best.stat().st_size if best.exists() else None
        ok = "loads" if size and _loads(best) else "does not load"
        r["note"] = f"best.npz {size} bytes, {ok}" if size is not None else "no best.npz"
        return r
    finally:
        untinyfs(mnt)


def _loads(path):
    import numpy as np
    try:
        with np.load(path) as z:
            return "config" in z.files
    except Exception:  # noqa: BLE001
        return False


@probe("train-sigkill", "kill -9 during training: what is on disk")
def _(c):
    out = c.p("tk")
    p = c.start(["train", "--epochs", "8", "--backend", "im2col", "--out", out])
    t0 = time.time()
    while time.time() - t0 < 300 and p.poll() is None:
        if (out / "best.npz").exists() and time.time() - (out / "best.npz").stat().st_mtime > 0:
            time.sleep(1.0)
            break
        time.sleep(0.2)
    p.kill()
    p.communicate()
    files = sorted(f.name for f in out.iterdir()) if out.exists() else []
    rows = csv_rows(out / "log.csv") if (out / "log.csv").exists() else "no log.csv"
    return {"rc": -9, "out": "", "err": "",
            "note": f"files: {', '.join(files) or 'none'}; log.csv rows: {rows}"}


probe("tune-trials-zero", "tune --trials 0",
      lambda c: ["tune", *TRAIN, "--trials", "0", "--out", c.p("u")])
probe("tune-trials-negative", "tune --trials -1",
      lambda c: ["tune", *TRAIN, "--trials", "-1", "--out", c.p("u")])
probe("tune-lrs-one", "tune --lrs 1e-3 (random search needs low,high)",
      lambda c: ["tune", *TRAIN, "--lrs", "1e-3", "--out", c.p("u")])
probe("tune-lrs-text", "tune --lrs a,b",
      lambda c: ["tune", *TRAIN, "--lrs", "a,b", "--out", c.p("u")])
probe("tune-optimizers-empty", "tune --optimizers \"\"",
      lambda c: ["tune", *TRAIN, "--optimizers", "", "--out", c.p("u")])
probe("tune-grid-lrs-empty", "tune --mode grid --lrs \"\"",
      lambda c: ["tune", *TRAIN, "--mode", "grid", "--lrs", "", "--out", c.p("u")])
probe("tune-lrs-inverted", "tune --lrs 1e-2,-1e-3",
      lambda c: ["tune", *TRAIN, "--lrs", "1e-2,-1e-3", "--out", c.p("u")])


# --- evaluate and inspect ------------------------------------------------------------------------
probe("evaluate-text", "evaluate a text file named .npz",
      lambda c: ["evaluate", c.write("text.npz", "not a checkpoint\n")])
probe("evaluate-truncated", "evaluate a truncated checkpoint",
      lambda c: ["evaluate", c.write("cut.npz", c.checkpoint().read_bytes()[:3000])])


@probe("evaluate-foreign", "evaluate an .npz that is not a checkpoint")
def _(c):
    import numpy as np
    path = c.p("foreign.npz")
    np.savez(path, a=np.arange(3))
    return c.cli(["evaluate", path])


@probe("inspect-foreign", "inspect an .npz that is not a checkpoint")
def _(c):
    import numpy as np
    path = c.p("foreign2.npz")
    np.savez(path, config=np.array("{}"))
    return c.cli(["inspect", path, "--out", c.p("i")])


probe("inspect-channels-zero", "inspect --channels 0",
      lambda c: ["inspect", c.checkpoint(), "--channels", "0", "--out", c.p("i")])
probe("inspect-image-out-of-range", "inspect --image 99999",
      lambda c: ["inspect", c.checkpoint(), "--image", "99999", "--out", c.p("i")])
probe("train-cifar-garbage", "train --data cifar10:DIR holding a data_batch_1 that is not a pickle",
      lambda c: ["train", *TRAIN, "--out", c.p("t"), "--data",
                 f"cifar10:{c.write('cf/data_batch_1', 'hello').parent}"])
probe("inspect-steps-negative", "inspect --steps -1",
      lambda c: ["inspect", c.checkpoint(), "--steps", "-1", "--out", c.p("i")])
probe("inspect-backend-unknown", "inspect --backend bogus",
      lambda c: ["inspect", c.checkpoint(), "--backend", "bogus", "--out", c.p("i")])
probe("evaluate-directory", "evaluate a folder", lambda c: ["evaluate", c.work])
probe("run-max-memory-tiny", "--max-memory 512 (no unit)",
      lambda c: ["run", "--suite", c.suite(), "--out", c.p("o"), *RUN, "--max-memory", "512"])
probe("verify-nonfinite-cuda-sim", "verify --cases nonfinite on numba-cuda (CUDA simulator)",
      lambda c: ["verify", "--cases", "nonfinite", "--backends", "numba-cuda", "--cuda-sim"])
probe("debug-traceback", "--debug before a failing command (the traceback is wanted)",
      lambda c: ["--debug", "evaluate", c.write("text.npz", "not a checkpoint\n")])


#: What each probe should end in, where not an error: "ok" (exit 0, nothing lost), "finding"
#: (exit 1 with the result's reasons), "traceback" (asked for with --debug).
EXPECT = {pid: "ok" for pid in (
    "run-threads-oversubscribe", "run-huge-case", "run-max-memory-small", "resume-cut-line",
    "resume-empty-folder", "resume-same", "run-stale-lock", "run-sigint", "run-sigkill",
    "verify-nonfinite", "report-corrupt-json", "report-json-list", "report-json-missing",
    "compare-corrupt-json", "train-sigkill")}
EXPECT.update({"verify-nonfinite-cuda-sim": "finding", "debug-traceback": "traceback"})

#: Notes that show data lost or a result silently wrong.
RED_FLAGS = ("CHANGED", "APPENDED TO", "TWO RUNS", "unreadable", "does not load",
             "FINISHED BEFORE", "summary.json written", "no log.csv")


def verdict(r) -> str:
    """The outcome as one of: ok, traceback, accepted silently, silently wrong or lost, refused,
    not run."""
    note = r["outcome"]
    if r.get("rc") is None and "killed" not in note:
        return "not run"
    lost = (any(flag in note for flag in RED_FLAGS) or re.search(r"[1-9]\d* incomplete", note)
            or (r["rc"] == 0 and "best.npz: missing" in note))   # said it wrote it
    expect = r.get("expect", "error")
    tb = note.startswith("traceback")
    if lost:
        return "silently wrong or lost"
    if expect == "traceback":
        return "ok" if tb else "refused"
    if tb:
        return "traceback"
    if expect == "error":
        return "accepted silently" if r["rc"] == 0 else "ok"
    if expect == "finding":
        return "ok" if r["rc"] == 1 else "refused"
    return "ok" if r["rc"] in (0, -9) else "refused"


# --- driver --------------------------------------------------------------------------------------
def outcome(r) -> str:
    if r.get("rc") is None:
        return r.get("note", "not run")
    text = (r.get("err", "") + "\n" + r.get("out", "")).strip()
    if "Traceback (most recent call last)" in r.get("err", ""):
        last = [ln for ln in r["err"].splitlines() if ln.strip()][-1]
        kind = f"traceback (exit {r['rc']}): {last.strip()}"
    elif r["rc"] == 0:
        kind = "exit 0"
    elif r["rc"] < 0:
        kind = f"killed ({r['rc']})"
    else:
        lines = [ln.strip() for ln in r.get("err", "").splitlines()
                 if ln.strip() and not ln.startswith(("Usage:", "Try "))]
        msg = next((ln for ln in lines if ln.startswith("Error")), lines[-1] if lines else
                   (text.splitlines()[-1] if text else ""))
        kind = f"error (exit {r['rc']}): {msg}"
    if r.get("rc") == 0:
        lines = [ln.strip() for ln in r.get("out", "").splitlines() if ln.strip()]
        warn = [ln.strip() for ln in r.get("err", "").splitlines()
                if "warning" in ln.lower()][:1]
        tail = (warn[0] + "; " if warn else "") + (lines[-1] if lines else "")
        kind += f": {tail}" if tail else ""
    if r.get("note"):
        kind += f" [{r['note']}]"
    return kind[:400]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", default="")
    ap.add_argument("--render", nargs=2, type=Path)
    a = ap.parse_args()
    if a.render:
        render(*a.render)
        return
    only = set(filter(None, a.only.split(",")))
    work = Path(tempfile.mkdtemp(prefix="cbprobe-"))
    results = json.loads(a.json.read_text()) if a.json.exists() and only else {}
    try:
        for pid, title, fn in PROBES:
            if only and pid not in only:
                continue
            sub = work / pid
            sub.mkdir()
            ctx = Ctx(a.root.resolve(), sub)
            t0 = time.time()
            try:
                r = fn(ctx)
            except Exception as e:  # noqa: BLE001 - a probe that breaks is recorded
                r = {"rc": None, "out": "", "err": "", "note": f"probe broke: {e!r}"}
            r["title"] = title
            r["cmd"] = getattr(ctx, "last_cmd", "").replace(str(sub), "DIR")
            r["expect"] = EXPECT.get(pid, "error")
            r["outcome"] = outcome(r).replace(str(sub), "DIR").replace(str(ctx.root), "SRC")
            r["s"] = round(time.time() - t0, 1)
            results[pid] = {k: r[k] for k in ("title", "cmd", "expect", "rc", "outcome", "s")}
            print(f"{pid:<30} {r['s']:6.1f}s {r['outcome'][:150]}", flush=True)
            a.json.write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def render(before_path: Path, after_path: Path):
    before = json.loads(before_path.read_text())
    after = json.loads(after_path.read_text())
    kinds = ("ok", "traceback", "accepted silently", "silently wrong or lost", "refused",
             "not run")
    count_b = {k: 0 for k in kinds}
    count_a = {k: 0 for k in kinds}
    for pid, r in after.items():
        count_a[verdict(r)] += 1
        if pid in before:
            count_b[verdict({**before[pid], "expect": r.get("expect", "error")})] += 1
    print(f"{len(after)} kinds of bad input and fault, each run from the command line.\n")
    print("| outcome | before | after |")
    print("| --- | --- | --- |")
    for k in kinds:
        if count_b[k] or count_a[k]:
            print(f"| {k} | {count_b[k]} | {count_a[k]} |")
    print()
    print("| # | bad input or fault | command | before | after |")
    print("| --- | --- | --- | --- | --- |")
    for i, (pid, r) in enumerate(after.items(), 1):
        b = before.get(pid)
        cell_b = "-" if b is None else f"{verdict({**b, 'expect': r.get('expect', 'error')})}: " \
            f"{b['outcome']}"
        cell_a = f"{verdict(r)}: {r['outcome']}"
        same = b is not None and b["outcome"] == r["outcome"]
        esc = lambda t: t.replace("|", "\\|").replace("\n", " ")  # noqa: E731
        print(f"| {i} | {esc(r['title'])} | `{esc(r.get('cmd', ''))[:160]}` | {esc(cell_b)} | "
              f"{'same' if same else esc(cell_a)} |")


if __name__ == "__main__":
    main()
