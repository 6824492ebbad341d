"""The one result record: what became of one backend on one problem in one direction.

`verify.check_backend` produces it; verification, the runner, `auto`, the reports and `compare`
read it (the harness keeps many of them as a pandas DataFrame, one column per field below).

Statuses, after oneDNN's benchdnn:

    PASSED         within tolerance of the reference (and timed, when timing was asked for)
    MISTRUSTED     within tolerance, but suspicious: an all-zero output where the reference is
                   not, or an error above half the tolerance; still timed
    FAILED         outside the tolerance, or the backend raised: no speed is ever shown
    UNIMPLEMENTED  the backend does not implement this op, parameter or dtype (its reason)
    SKIPPED        not run: its estimated time per call or memory exceeds the limit
    UNAVAILABLE    the backend cannot run on this machine (missing package or device)

The columns are declared once, as the fields of `Result` that carry a `dtype` (pandas' name for
the column type); adding a column is adding a field here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

PASSED = "PASSED"
MISTRUSTED = "MISTRUSTED"
FAILED = "FAILED"
UNIMPLEMENTED = "UNIMPLEMENTED"
SKIPPED = "SKIPPED"
UNAVAILABLE = "UNAVAILABLE"
STATUSES = (PASSED, MISTRUSTED, FAILED, UNIMPLEMENTED, SKIPPED, UNAVAILABLE)
#: The statuses of a result that was checked and is within tolerance: these carry a speed.
WITHIN_TOLERANCE = (PASSED, MISTRUSTED)


def _column(dtype: str, default=None, doc: str = ""):
    """A field that is a column of results.csv, of pandas dtype `dtype`."""
    return field(default=default, metadata={"dtype": dtype, "doc": doc})


@dataclass
class Result:
    """One backend on one problem in one direction. Timing fields are None unless timed."""

    suite: str = _column("string", "")
    case: str = _column("string", "", "the case's name in its suite")
    descriptor: str = _column("string", "", "the problem in benchdnn's syntax")
    family: str = _column("string", "", "conv2d, max_pool2d, lstm, ...")
    direction: str = _column("string", "", "fwd, bwd-data, bwd-weights, bwd")
    backend: str = _column("string", "")
    dtype: str = _column("string", "")
    batch: int | None = _column("Int64")
    threads: int | None = _column("Int64")
    status: str = _column("string", "", "one of STATUSES")
    reason: str = _column("string", "", "why, for any status but a clean PASSED")
    reference: str = _column("string", "", "which float64 reference checked it")
    rel_error: float | None = _column("float64", doc="worst error relative to the summed terms")
    tolerance: float | None = _column("float64")
    median_s: float | None = _column("float64")
    iqr_s: float | None = _column("float64")
    min_s: float | None = _column("float64")
    mean_s: float | None = _column("float64")
    ci_low_s: float | None = _column("float64", doc="95% confidence interval of the median")
    ci_high_s: float | None = _column("float64")
    n_samples: int | None = _column("Int64")
    outliers: int | None = _column("Int64")
    noisy: bool | None = _column("boolean")
    first_call_s: float | None = _column("float64", doc="the first call, compilation included")
    flops: float | None = _column("float64")
    bytes: float | None = _column("float64", doc="the least bytes the op must move")
    gflops: float | None = _column("float64")
    pct_of_peak: float | None = _column("float64", doc="gflops as a percentage of the run's "
                                        "measured fp32 FMA peak (machine.measure_peaks)")
    gbps: float | None = _column("float64")
    intensity: float | None = _column("float64", doc="flops / bytes")
    # the machine that measured the row (machine.machine_record): a run spread over a cluster
    # has rows from several
    host: str = _column("string", "", "the host name of the machine that measured it")
    cpu: str = _column("string", "", "its CPU model")
    gpu: str = _column("string", "", "its GPU, empty without one")
    machine: str = _column("string", "", "its fingerprint key: hardware and library versions")
    worker: str = _column("string", "", "the Dask worker that measured it; empty for a local "
                                         "run")
    processes: int | None = _column("Int64", doc="worker processes that measured it (--processes; "
                                    "empty: the run's own process)")
    process_spread: float | None = _column("float64", doc="between-process spread: the standard "
                                           "deviation of the log process medians")
    peak_bytes: int | None = _column("Int64", doc="most bytes allocated at once in one call, "
                                     "above what was allocated before it, outputs included "
                                     "(measured in a call of its own, not a timed one)")
    workspace_bytes: int | None = _column("Int64", doc="of those, the scratch the backends keep "
                                          "between calls (their workspaces) after that call")
    # not columns: raw samples (samples.jsonl; with --processes, every process's in turn, and each
    # process's median and first call), and what a caller may keep in memory
    samples_s: list = field(default_factory=list)
    warmup_s: list = field(default_factory=list)
    process_medians_s: list = field(default_factory=list)
    process_first_call_s: list = field(default_factory=list)
    problem: object = field(default=None, repr=False, compare=False)
    outputs: tuple = field(default=(), repr=False, compare=False)

    @property
    def within_tolerance(self) -> bool:
        return self.status in WITHIN_TOLERANCE

    @property
    def timed(self) -> bool:
        """Checked, within tolerance and timed: it has a speed."""
        return self.within_tolerance and self.median_s is not None

    def key(self) -> tuple:
        """What identifies a row within a run."""
        return (self.case, self.descriptor, self.direction, self.backend)

    def row(self) -> dict:
        """The columns, by name."""
        return {name: getattr(self, name) for name in COLUMNS}

    @classmethod
    def from_row(cls, row) -> Result:
        """A Result from a mapping of columns (a dict, a pandas row), missing values as None (or
        "" for text), NumPy scalars as Python's; the LISTS are taken when present."""
        values = {}
        for name, dtype in DTYPES.items():
            v = row.get(name) if hasattr(row, "get") else row[name]
            if _missing(v):
                v = "" if dtype == "string" else None
            elif hasattr(v, "item"):
                v = v.item()
            values[name] = v
        for name in LISTS:
            v = row.get(name) if hasattr(row, "get") else None
            values[name] = list(v) if isinstance(v, (list, tuple)) else []
        return cls(**values)

    def replace(self, **changes) -> Result:
        return dataclasses.replace(self, **changes)


def _missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(v != v)        # NaN, and pandas' NA (whose comparison raises)
    except (TypeError, ValueError):
        return True


#: column name -> pandas dtype, in column order
DTYPES: dict[str, str] = {f.name: f.metadata["dtype"] for f in dataclasses.fields(Result)
                          if "dtype" in f.metadata}
COLUMNS: tuple[str, ...] = tuple(DTYPES)
#: the fields that are lists of raw timings (samples.jsonl), not columns
LISTS: tuple[str, ...] = ("samples_s", "warmup_s", "process_medians_s", "process_first_call_s")
