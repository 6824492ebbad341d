"""Runs spread over a Dask cluster (the optional `cluster` extra: dask[distributed]).

One task per (case, direction): every requested backend of it is measured side by side on the
worker it lands on (runner.measure_case), and the rows come back to the client, which stores them
through the Runner like a local run's. Workers are `dask worker ADDRESS --nthreads 1 --resources
benchmark=1` processes with convbench installed; every task asks for one `benchmark` slot, so with
one slot per host (or GPU) no two measurements share it. `local:N` starts N such worker processes
here, bound to 127.0.0.1: isolation, so that a kernel that crashes ends its worker, not the sweep.

Faults. A task's rows come back whole or not at all, so a worker that dies mid-case loses nothing
and duplicates nothing: the scheduler runs the task again elsewhere. A task whose workers died
more than the scheduler's `distributed.scheduler.allowed-failures` times is split into one task
per backend, and a backend whose task kills its workers that often again, twice (a task queued
on a dying worker is a suspect too), is recorded FAILED ("worker died N times"); the other
backends of the case are measured. Workers whose convbench
differs from the client's (code_identity: the digest of its source files) are an error before
anything runs, and a task refuses to run on one that joins later. An unreachable scheduler is an
error after a bounded wait; an interrupt cancels the tasks not yet finished.

Security. A Dask scheduler runs whatever code it is sent: plain tcp:// beyond loopback is refused
unless `insecure=True`; tls:// takes Dask's Security (CA, certificate and key files, or Dask's
configuration).
"""
from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import re
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from convbench.backends import load_backend_file
from convbench.errors import ConvbenchError
from convbench.harness.runner import measure_case
from convbench.machine import code_identity, machine_record
from convbench.memory import available_bytes
from convbench.result import FAILED
from convbench.threads import cpu_count, set_threads
from convbench.verify import new_result

#: Seconds to wait for the scheduler, and then for a first worker, before giving up.
CONNECT_TIMEOUT_S = 10.0
#: The resource each benchmark task takes: workers offer one (`--resources benchmark=1`).
RESOURCE = "benchmark"
INSTALL = 'pip install "convbench[cluster]" (dask[distributed])'
_LOCAL = re.compile(r"local:(\d+)")


class ClusterError(ConvbenchError):
    """A cluster that cannot be used: unreachable, refused, or running other code."""


class VersionMismatchError(ClusterError):
    """A worker runs another convbench than the client."""


@dataclass(frozen=True)
class Address:
    """A parsed --cluster value: `local:N` (workers = N) or a scheduler's address."""

    text: str
    workers: int | None = None

    @property
    def local(self) -> bool:
        return self.workers is not None

    @property
    def scheme(self) -> str:
        return "local" if self.local else self.text.split("://")[0]


def _is_loopback(host: str) -> bool:
    """Whether every address `host` names is on loopback (a name that does not resolve: no)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback
                               for i in infos)


def parse_address(text: str, insecure: bool = False) -> Address:
    """`local:N`, `tcp://HOST:PORT` or `tls://HOST:PORT` (a bare HOST:PORT is tcp://). A tcp://
    address that is not on loopback is refused unless `insecure`: ClusterError says why."""
    text = str(text).strip()
    m = _LOCAL.fullmatch(text)
    if m:
        n = int(m.group(1))
        if n < 1:
            raise ClusterError(f"{text!r}: local:N needs N >= 1 worker processes")
        return Address(text, n)
    if text.startswith("local:") or text == "local":
        raise ClusterError(f"{text!r}: write local:N, N worker processes (local:2)")
    if "://" not in text:
        text = f"tcp://{text}"
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or port is None:
        raise ClusterError(f"{text!r} is not a scheduler address: write "
                           f"tls://HOST:PORT, tcp://HOST:PORT or local:N")
    if parts.scheme == "tcp" and not insecure and not _is_loopback(parts.hostname):
        raise ClusterError(
            f"{text}: refusing plain tcp:// to {parts.hostname}, which is not this "
            f"machine's loopback. A Dask scheduler runs whatever code it is sent, and tcp:// "
            f"neither encrypts nor authenticates, so anyone who can reach the port can run code "
            f"on every worker. Use tls:// with --tls-ca, --tls-cert and --tls-key, or pass "
            f"--insecure on a network you trust.")
    return Address(text)


def security(address: Address, ca=None, cert=None, key=None):
    """Dask's Security for `address`: from the three files when given (all three, tls:// only),
    from Dask's configuration (distributed.comm.tls.*) for tls:// without them, None for tcp://
    and local:N."""
    given = {"--tls-ca": ca, "--tls-cert": cert, "--tls-key": key}
    if any(given.values()):
        if address.scheme != "tls":
            raise ClusterError(f"--tls-ca/--tls-cert/--tls-key are for a tls:// scheduler, not "
                               f"{address.text}")
        missing = [k for k, v in given.items() if not v]
        if missing:
            raise ClusterError(f"TLS needs all of --tls-ca, --tls-cert and --tls-key: "
                               f"{', '.join(missing)} missing")
        for option, path in given.items():
            if not Path(path).is_file():
                raise ClusterError(f"{option} {path!r}: no such file")
    if address.scheme != "tls":
        return None
    Security = _distributed().Security
    if any(given.values()):
        return Security(tls_ca_file=str(ca), tls_client_cert=str(cert), tls_client_key=str(key),
                        require_encryption=True)
    return Security()       # Dask's configuration: distributed.comm.tls.{ca-file,client.*}


def _distributed():
    """The distributed package, imported on first use (optional, and a second to import)."""
    try:
        import distributed  # lazy: the optional cluster extra, slow to import
    except ImportError:
        raise ClusterError(f"--cluster needs Dask distributed: {INSTALL}") from None
    return distributed


# --- what runs on a worker -------------------------------------------------------------------

_loaded_files: set = set()


def _load_backend_sources(sources) -> None:
    """Register the client's --backend-file backends here, from their text (written once per
    content to a temporary folder, so a worker on another host needs no copy of the file)."""
    for name, text in sources:
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        if digest in _loaded_files:
            continue
        folder = Path(tempfile.gettempdir()) / "convbench-backend-files" / digest
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        load_backend_file(path)
        _loaded_files.add(digest)


def worker_record(dask_worker=None) -> dict:
    """What the client checks and records of a worker: its code identity and machine."""
    return {**code_identity(), **machine_record(), "cores": cpu_count(),
            "name": str(dask_worker.name) if dask_worker is not None else ""}


def _prepare(digest: str, threads, backend_sources) -> None:
    """Ready this worker for a task: refuse when its convbench is not the client's (`digest`),
    register the client's backend files, set the thread count."""
    mine = code_identity()
    if mine["digest"] != digest:
        raise VersionMismatchError(
            f"worker on {socket.gethostname()} runs convbench {mine['version']} (commit "
            f"{mine['commit']}, source digest {mine['digest']}), the client source digest "
            f"{digest}: install the client's convbench on every worker")
    _load_backend_sources(backend_sources)
    set_threads(threads)


def measure_task(case, op_name: str, backends, settings, threads, digest: str,
                 backend_sources=(), memory_fraction: float | None = None) -> list:
    """The task of a run: measure_case on this worker, every row naming the worker. With
    memory_fraction, a case may plan to use that fraction of the memory available here (the
    client's memory says nothing of a worker's host)."""
    _prepare(digest, threads, backend_sources)
    if settings.peak_gflops is not None and settings.peak_machine != machine_record()["machine"]:
        # the client's FMA peak is not this host's: no % of peak rather than a wrong one
        settings = dataclasses.replace(settings, peak_gflops=None)
    available = available_bytes() if memory_fraction is not None else None
    if available is not None:
        settings = dataclasses.replace(settings, max_bytes=int(memory_fraction * available))
    name = str(_distributed().get_worker().name)
    return [r.replace(worker=name) for r in measure_case(case, op_name, backends, settings)]


def call_task(fn, item, threads, digest: str, backend_sources=()):
    """The task of Cluster.map: fn(item) on this worker."""
    _prepare(digest, threads, backend_sources)
    return fn(item)


# --- the client ------------------------------------------------------------------------------

class Cluster:
    """A connection to a Dask scheduler (or a LocalCluster for local:N) for measuring jobs.

    with Cluster(parse_address("local:2")) as c:  run_suite(..., cluster=c)

    threads: each task's thread count (None: the worker's cores). backend_files: --backend-file
    paths, sent to the workers as text. allowed_failures: for local:N, how many worker deaths a
    task survives (None: Dask's distributed.scheduler.allowed-failures); a remote scheduler has
    its own setting. memory_fraction: a case's memory limit on each worker, as a fraction of the
    memory available there when the task starts (None: the run's max_bytes)."""

    def __init__(self, address: Address, security=None, threads: int | None = None,
                 backend_files=(), timeout_s: float = CONNECT_TIMEOUT_S,
                 allowed_failures: int | None = None, memory_fraction: float | None = None):
        self.address = address
        self.security = security
        self.threads = threads
        self.backend_sources = tuple((Path(p).name, Path(p).read_text()) for p in backend_files)
        self.timeout_s = timeout_s
        self.allowed_failures = allowed_failures
        self.memory_fraction = memory_fraction
        self.client = self._local = None
        self.workers: dict = {}

    def __enter__(self) -> Cluster:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        dist = _distributed()
        import dask  # lazy: comes with distributed

        if self.address.local:
            # Dask's nannies set OMP/MKL/OPENBLAS_NUM_THREADS=1 in their own process (this one)
            # before starting a worker; convbench sets every library's threads per task itself
            config = {f"distributed.nanny.pre-spawn-environ.{k}_NUM_THREADS": None
                      for k in ("OMP", "MKL", "OPENBLAS")}
            if self.allowed_failures is not None:
                config["distributed.scheduler.allowed-failures"] = self.allowed_failures
            with dask.config.set(config):
                self._local = dist.LocalCluster(
                    n_workers=self.address.workers, threads_per_worker=1, processes=True,
                    host="127.0.0.1", protocol="tcp://", dashboard_address=None,
                    # no dashboard; its HTTP server (health checks) on any free loopback port
                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                    resources={RESOURCE: 1}, silence_logs=40)
            target = self._local
        else:
            target = self.address.text
        try:
            self.client = dist.Client(target, security=self.security, timeout=self.timeout_s,
                                      set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise ClusterError(f"cannot reach the Dask scheduler at {self.address.text} within "
                               f"{self.timeout_s:g} s: {e}") from None
        try:
            self.client.wait_for_workers(1, timeout=self.timeout_s)
        except (OSError, TimeoutError):
            raise ClusterError(f"no worker joined the Dask scheduler at {self.address.text} "
                               f"within {self.timeout_s:g} s: start workers with `dask worker "
                               f"{self.address.text} --nthreads 1 --resources "
                               f"{RESOURCE}=1`") from None
        self.workers = self._check_workers()

    def _check_workers(self) -> dict:
        """address -> worker_record of every worker; ClusterError when none offers the benchmark
        slot or any runs other code than the client."""
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        if not any(RESOURCE in (w.get("resources") or {}) for w in info.values()):
            raise ClusterError(f"no worker of {self.address.text} offers the `{RESOURCE}` "
                               f"resource, so no task could run: start workers with "
                               f"--resources {RESOURCE}=1")
        try:
            records = self.client.run(worker_record)
        except Exception as e:   # a worker without convbench fails the import
            raise ClusterError(f"the workers of {self.address.text} cannot run convbench: "
                               f"{type(e).__name__}: {e}") from None
        mine = code_identity()
        odd = [f"{r['name'] or a} ({r['host']}): convbench {r['version']}, commit "
               f"{r['commit']}, digest {r['digest']}"
               for a, r in records.items() if r["digest"] != mine["digest"]]
        if odd:
            raise VersionMismatchError(
                f"workers run another convbench than this client (convbench "
                f"{mine['version']}, commit {mine['commit']}, digest {mine['digest']}): "
                f"{'; '.join(odd)}. Install the same convbench on every worker.")
        return records

    def record(self) -> dict:
        """The cluster as meta.json records it: its address and each worker's machine."""
        return {"address": self.address.text,
                "workers": {r["name"] or a: {k: r[k] for k in ("host", "cpu", "gpu", "machine",
                                                                "cores")}
                            for a, r in self.workers.items()}}

    def measure(self, jobs, settings, step):
        """runner.Runner's `measure`: one task per job with backends left to measure, its rows
        yielded (a list) as each task finishes, step(case, op) as each job is done. A task whose
        workers all died is split into one task per backend, so that only the backend that
        crashes is FAILED. Tasks not finished are cancelled when this stops early (an interrupt, an
        error)."""
        dist = _distributed()
        digest = code_identity()["digest"]
        futures, left, deaths, retried = {}, {}, {}, set()

        def submit(case, op, backends):
            key = f"convbench-{op.direction}-{case.name}-{os.urandom(4).hex()}"
            f = self.client.submit(measure_task, case, op.name, backends, settings,
                                   self.threads, digest, self.backend_sources,
                                   self.memory_fraction, pure=False, resources={RESOURCE: 1},
                                   key=key)
            futures[f] = (case, op, backends)
            return f

        for case, op, backends in jobs:
            if backends:
                submit(case, op, backends)
                left[case, op.name] = 1
            else:
                step(case, op)
        pending = dist.as_completed(list(futures), loop=self.client.loop)
        try:
            for f in pending:
                case, op, backends = futures.pop(f)
                try:
                    results = f.result()
                except dist.KilledWorker as e:
                    if len(backends) > 1:
                        for b in backends:
                            pending.add(submit(case, op, [b]))
                        left[case, op.name] += len(backends) - 1
                        continue
                    # a task waiting in the queue of a worker that died counts among the
                    # suspects: one more try tells a bystander from the backend that crashes
                    who = (case.name, op.name, backends[0])
                    deaths[who] = deaths.get(who, 0) + e.allowed_failures + 1
                    if who not in retried:
                        retried.add(who)
                        pending.add(submit(case, op, backends))
                        continue
                    results = self._died(case, op, backends, settings, e, deaths[who])
                left[case, op.name] -= 1
                if not left[case, op.name]:
                    step(case, op)
                yield results
        finally:
            if futures:
                self.client.cancel(list(futures), force=True)

    def map(self, fn, items):
        """fn(item) for each item, one task each on a benchmark slot (fn: a module-level function
        of convbench, which the workers import). Yields (index, result, None) as each finishes, or
        (index, None, why) for one whose workers died; cancels the rest when stopped early."""
        dist = _distributed()
        digest = code_identity()["digest"]
        futures = {self.client.submit(call_task, fn, item, self.threads, digest,
                                      self.backend_sources, pure=False,
                                      resources={RESOURCE: 1},
                                      key=f"convbench-{fn.__name__}-{i}-{os.urandom(4).hex()}"): i
                   for i, item in enumerate(items)}
        try:
            for f in dist.as_completed(list(futures), loop=self.client.loop):
                i = futures.pop(f)
                try:
                    yield i, f.result(), None
                except dist.KilledWorker as e:
                    yield i, None, (f"worker died {e.allowed_failures + 1} times running it "
                                    f"(last on {getattr(e.last_worker, 'address', '?')})")
        finally:
            if futures:
                self.client.cancel(list(futures), force=True)

    def _died(self, case, op, backends, settings, e, deaths: int) -> list:
        """FAILED rows for a task whose workers died `deaths` times running it."""
        last = getattr(e.last_worker, "address", "")
        known = self.workers.get(last) or (worker_record() if self.address.local else {})
        reason = (f"worker died {deaths} times running this backend on this case "
                  f"(a crash in its kernel: segfault, abort, or killed for memory); last on "
                  f"{last}")
        machine = {k: known.get(k, "") for k in ("host", "cpu", "gpu", "machine")}
        return [new_result(b, op, case.problem, settings.dtype).replace(
                    status=FAILED, reason=reason, suite=settings.suite, case=case.name,
                    problem=None, worker=str(known.get("name", "")), **machine)
                for b in backends]

    def close(self) -> None:
        for thing in (self.client, self._local):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # closing a broken connection must not mask the error
                    pass           # that got us here
        self.client = self._local = None
