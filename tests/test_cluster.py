"""Runs over Dask distributed (harness.cluster), on 127.0.0.1 only: the same rows as a local run,
nothing lost when a worker is killed, a crashing backend FAILED while the sweep goes on, resume,
an interrupt, the version check, refused and unreachable addresses, TLS, and the real `dask
scheduler` / `dask worker` processes driven from the command line."""
import datetime
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("distributed")

from cryptography import x509  # noqa: E402  (the test extra brings it)
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from distributed import LocalCluster, Security  # noqa: E402

import convbench.backends as registry  # noqa: E402
from convbench import autotune  # noqa: E402
from convbench.backends import load_backend_file  # noqa: E402
from convbench.cli import main  # noqa: E402
from convbench.harness import cluster as cl  # noqa: E402
from convbench.harness.cluster import (  # noqa: E402
    Cluster,
    ClusterError,
    VersionMismatchError,
    parse_address,
    security,
)
from convbench.harness.runner import RunConfig, load_results, run_suite  # noqa: E402
from convbench.harness.suites import load_suite  # noqa: E402
from convbench.result import FAILED, PASSED  # noqa: E402
from convbench.threads import cpu_count  # noqa: E402
from convbench.timing import TimingPolicy  # noqa: E402
from convbench.train import evaluate_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).parent / "dask"
FAST = TimingPolicy(budget_s=0.02, warmup_budget_s=0.01, min_reps=3, max_reps=5)
BACKENDS = ["im2col", "numpy"]
ABORT = '''
import os
import convbench as cb


class Abort(cb.Backend):
    name = "test-abort"
    description = "aborts its process on a convolution"

    def conv2d_fwd(self, p, x, w, b):
        os.abort()
'''


def _config(cases, backends=BACKENDS, policy=FAST):
    return RunConfig("quick", cases, list(backends), ("fwd",), threads=1, policy=policy,
                     batch=1)


def _rows(frame) -> set:
    return set(zip(frame["case"], frame["direction"], frame["backend"], frame["status"]))


def _keys(frame) -> list:
    return list(zip(frame["case"], frame["direction"], frame["backend"]))


#: The thread variables as the test session started (a LocalCluster must leave them alone).
THREAD_ENV = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


@pytest.fixture(scope="module")
def quick():
    return load_suite("quick", 1)


@pytest.fixture(scope="module")
def local2():
    """Two local worker processes; a task whose worker dies once is given up (allowed
    failures 0), so that a crashing backend costs few restarts."""
    with Cluster(parse_address("local:2"), threads=1, allowed_failures=0) as c:
        yield c


# --- addresses and security --------------------------------------------------------------------

def test_addresses():
    assert parse_address("local:3").workers == 3
    assert parse_address("tcp://127.0.0.1:8786").scheme == "tcp"
    assert parse_address("localhost:8786").text == "tcp://localhost:8786"
    assert parse_address("tls://10.0.0.5:8786").scheme == "tls"
    assert parse_address("tcp://10.0.0.5:8786", insecure=True).text == "tcp://10.0.0.5:8786"
    with pytest.raises(ClusterError, match=r"refusing plain tcp:// to 10\.0\.0\.5.*--insecure"):
        parse_address("tcp://10.0.0.5:8786")
    for bad in ("local:0", "local", "udp://127.0.0.1:1", "tcp://127.0.0.1", "nonsense"):
        with pytest.raises(ClusterError):
            parse_address(bad)
    with pytest.raises(ClusterError, match="--tls-cert, --tls-key missing"):
        security(parse_address("tls://127.0.0.1:1"), ca=__file__)
    with pytest.raises(ClusterError, match="for a tls:// scheduler"):
        security(parse_address("tcp://127.0.0.1:1"), __file__, __file__, __file__)


def test_unreachable_scheduler_is_a_clear_error():
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    with pytest.raises(ClusterError, match=f"cannot reach the Dask scheduler at {address} "
                                           r"within 1 s"):
        with Cluster(parse_address(address), timeout_s=1):
            pass


def test_cluster_refusals_on_the_command_line(tmp_path):
    r = CliRunner().invoke(main, ["run", "--suite", "quick", "--cluster", "tcp://192.0.2.1:8786",
                                  "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "refusing plain tcp://" in r.output
    r = CliRunner().invoke(main, ["run", "--suite", "quick", "--tls-ca", __file__,
                                  "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "no --cluster is given" in r.output
    r = CliRunner().invoke(main, ["run", "--suite", "quick", "--cluster", "local:2",
                                  "--threads", str(cpu_count()), "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "local workers" in r.output


# --- a LocalCluster ------------------------------------------------------------------------------

def test_cluster_sweep_gives_the_rows_of_a_local_sweep(tmp_path, quick, local2):
    cases = quick[:4]
    here, _ = run_suite(_config(cases), tmp_path / "here", peaks=False, report=False)
    there, meta = run_suite(_config(cases), tmp_path / "there", peaks=False, cluster=local2)
    assert _rows(there) == _rows(here)
    assert len(there) == len(cases) * len(BACKENDS)
    assert set(there["worker"]) <= {"0", "1"} and set(here["worker"]) == {""}
    assert set(there["host"]) == {socket.gethostname()} == set(here["host"])
    assert set(there["machine"]) == set(here["machine"]) and all(there["machine"])
    assert set(meta["cluster"]["workers"]) == {"0", "1"}
    assert {k: os.environ.get(k) for k in THREAD_ENV} == THREAD_ENV
    listening = [local2._local.scheduler_address, *local2.workers,
                 *(w["nanny"] for w in local2.client.scheduler_info()["workers"].values())]
    assert all(a.startswith("tcp://127.0.0.1:") for a in listening), listening
    assert (tmp_path / "there" / "report.html").exists()
    assert len(load_results(tmp_path / "there")) == len(there)


def test_resume_submits_only_missing_rows(tmp_path, quick, local2):
    out = tmp_path / "run"
    first, _ = run_suite(_config(quick[:3]), out, peaks=False, report=False, cluster=local2)
    kept = (out / "results.csv").read_text().splitlines()
    # the same suite, resumed: a config over more cases would be another suite, so keep 3 rows
    # and drop the rest as if the run had stopped there
    (out / "results.csv").write_text("\n".join(kept[:4]) + "\n")
    again, _ = run_suite(_config(quick[:3]), out, resume=True, peaks=False, report=False,
                         cluster=local2)
    assert sorted(_keys(again)) == sorted(_keys(first))
    assert len(set(_keys(again))) == len(again)
    assert (out / "results.csv").read_text().splitlines()[:4] == kept[:4]


def test_interrupt_cancels_pending_tasks_and_keeps_finished_rows(tmp_path, quick, local2):
    def stop(i, n, case, op, elapsed):
        if i == 2:
            raise KeyboardInterrupt

    slow = TimingPolicy(budget_s=0.2, warmup_budget_s=0.05)
    cases = (quick * 3)[:12]
    cases = [c.__class__(f"{c.name} #{i}", c.problem) for i, c in enumerate(cases)]
    with pytest.raises(KeyboardInterrupt):
        run_suite(_config(cases, policy=slow), tmp_path / "run", progress=stop, peaks=False,
                  report=False, cluster=local2)
    rows = json.loads((tmp_path / "run" / "results.json").read_text())
    assert rows["meta"]["interrupted"] and 2 <= len(rows["rows"]) // len(BACKENDS) < len(cases)
    deadline = time.monotonic() + 10
    while local2._local.scheduler.tasks and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not local2._local.scheduler.tasks


def test_memory_limit_is_each_workers_own(tmp_path, quick, local2, monkeypatch):
    monkeypatch.setattr(local2, "memory_fraction", 1e-12)      # of the worker's memory: bytes
    frame, _ = run_suite(_config(quick[:1], ["im2col"]), tmp_path / "run", peaks=False,
                         report=False, cluster=local2)
    assert list(frame["status"]) == ["SKIPPED"] and "estimated memory" in frame["reason"][0]


def test_version_mismatch_is_an_error_before_anything_runs(monkeypatch, local2):
    other = {**cl.code_identity(), "digest": "0" * 16}
    with pytest.raises(VersionMismatchError, match="source digest"):     # a worker joining late
        cl.measure_task(None, "conv2d:fwd", [], None, 1, other["digest"])
    monkeypatch.setattr(cl, "code_identity", lambda: other)
    with pytest.raises(VersionMismatchError, match="workers run another convbench"):
        local2._check_workers()


@pytest.fixture
def abort_backend(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_user", dict(registry._user))
    monkeypatch.setattr(registry, "_instances", dict(registry._instances))
    monkeypatch.setenv("CONVBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(autotune, "_memo", {})
    path = tmp_path / "abort_backend.py"
    path.write_text(ABORT)
    load_backend_file(path)
    return path


def test_a_backend_that_aborts_is_failed_and_the_sweep_finishes(tmp_path, abort_backend,
                                                                 local2, monkeypatch):
    suite = tmp_path / "suite.txt"
    suite.write_text("mb1ic4ih8oc4kh3ph1\nmax:mb1ic4ih8kh2sh2\n")
    cases = load_suite(str(suite))
    monkeypatch.setattr(local2, "backend_sources", Cluster(
        local2.address, backend_files=[abort_backend]).backend_sources)
    frame, _ = run_suite(_config(cases, ["im2col", "test-abort"]), tmp_path / "run",
                         peaks=False, report=False, cluster=local2)
    status = {(r.descriptor.startswith("max"), r.backend): (r.status, r.reason)
              for r in frame.itertuples()}
    assert len(frame) == 4
    assert status[False, "test-abort"][0] == FAILED
    assert "worker died 2 times" in status[False, "test-abort"][1]
    assert status[False, "im2col"][0] == PASSED        # its case's other backend is measured
    assert status[True, "test-abort"][0] == "UNIMPLEMENTED"


# --- TLS -----------------------------------------------------------------------------------------

def _tls_files(folder: Path, name: str) -> tuple[str, str, str]:
    """A self-signed CA and one certificate it signs (for the scheduler, workers and the client
    alike): (ca, cert, key) file paths."""
    now = datetime.datetime.now(datetime.timezone.utc)
    span = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    def cert(subject, issuer, public_key, signing_key, ca: bool):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(public_key).serial_number(x509.random_serial_number())
             .not_valid_before(span[0]).not_valid_after(span[1])
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"),
                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        return b.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = cert(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), ca_name,
                key.public_key(), ca_key, False)
    paths = [folder / f"{name}-{p}.pem" for p in ("ca", "cert", "key")]
    pem = serialization.Encoding.PEM
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(p) for p in paths)


def test_tls_cluster_works_and_refuses_a_client_without_its_ca(tmp_path, quick):
    ca, cert, key = _tls_files(tmp_path, "good")
    server = Security(tls_ca_file=ca, tls_scheduler_cert=cert, tls_scheduler_key=key,
                      tls_worker_cert=cert, tls_worker_key=key, tls_client_cert=cert,
                      tls_client_key=key, require_encryption=True)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      protocol="tls://", security=server, dashboard_address=None,
                      resources={"benchmark": 1}) as lc:
        address = parse_address(lc.scheduler_address)
        assert address.scheme == "tls"
        with Cluster(address, security(address, ca, cert, key), threads=1) as c:
            frame, _ = run_suite(_config(quick[:2]), tmp_path / "run", peaks=False,
                                 report=False, cluster=c)
        assert len(frame) == 2 * len(BACKENDS) and all(frame["worker"])
        # a client whose certificate another CA signed, and which trusts that CA only
        other = _tls_files(tmp_path, "other")
        with pytest.raises(ClusterError, match="cannot reach the Dask scheduler"):
            with Cluster(address, security(address, *other), timeout_s=2):
                pass


# --- real dask scheduler and worker processes ---------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_processes(tmp_path):
    """`dask scheduler` and two `dask worker` processes (no nanny: a killed worker stays dead),
    started as a user would; yields (address, {name: Popen})."""
    if not DASK.exists():
        pytest.skip(f"no `dask` command next to {sys.executable}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = {"scheduler": subprocess.Popen(
        [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(logs / "scheduler", "w"))}
    for name in ("w1", "w2"):
        procs[name] = subprocess.Popen(
            [str(DASK), "worker", address, "--nthreads", "1", "--resources", "benchmark=1",
             "--name", name, "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(logs / name, "w"))
    try:
        yield address, procs
    finally:
        for p in procs.values():        # the test is over: no need for a graceful close
            p.kill()
            p.wait()


def test_real_dask_processes_from_the_command_line(tmp_path, quick, dask_processes):
    address, procs = dask_processes
    out = tmp_path / "cli"
    r = subprocess.run(
        [sys.executable, "-m", "convbench.cli", "run", "--suite", "quick", "--batch", "1",
         "--backends", ",".join(BACKENDS), "--budget", "0.02", "--threads", "1", "--no-peaks",
         "--cluster", address, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    frame = load_results(out)
    here, _ = run_suite(_config(quick), tmp_path / "here", peaks=False, report=False)
    assert _rows(frame) == _rows(here)
    assert set(frame["worker"]) <= {"w1", "w2"}
    assert "By machine" in (out / "report.html").read_text()

    # SIGKILL a worker while it measures a case: its case runs again on the other, nothing lost
    killed = []

    def kill_busy(i, n, case, op, elapsed):
        if killed:
            return
        for worker, keys in c.client.processing().items():
            info = c.workers.get(worker)
            if keys and info and procs[info["name"]].poll() is None:
                procs[info["name"]].send_signal(signal.SIGKILL)
                killed.append(info["name"])
                return

    slow = TimingPolicy(budget_s=0.1, warmup_budget_s=0.05)
    with Cluster(parse_address(address), threads=1) as c:
        frame, _ = run_suite(_config(quick, policy=slow), tmp_path / "killed", progress=kill_busy,
                             peaks=False, report=False, cluster=c)
    assert killed
    assert sorted(_keys(frame)) == sorted((c_.name, "fwd", b) for c_ in quick for b in BACKENDS)
    assert set(frame["status"]) <= {PASSED, "UNIMPLEMENTED"}
    survivor = ({"w1", "w2"} - set(killed)).pop()
    assert survivor in set(frame["worker"])


def test_tune_on_a_cluster_brings_the_best_checkpoint_back(tmp_path):
    out = tmp_path / "tune"
    r = CliRunner().invoke(main, ["tune", "--cluster", "local:1", "--trials", "2", "--epochs", "1",
                                  "--backend", "im2col", "--batch-size", "128", "--out",
                                  str(out)])
    assert r.exit_code == 0, r.output
    assert "trial 1/2" in r.output and "trial 2/2" in r.output
    rows = (out / "tune.csv").read_text().splitlines()
    assert len(rows) == 3
    assert 0 <= evaluate_checkpoint(out / "best.npz")["test_accuracy"] <= 1


def test_ci_installs_the_cluster_extra():
    ci = (ROOT / ".ci" / "run").read_text()
    assert any("pip install" in line and "cluster" in line.split("-e")[-1]
               for line in ci.splitlines())
    assert 'cluster = ["dask[distributed]' in (ROOT / "pyproject.toml").read_text()
