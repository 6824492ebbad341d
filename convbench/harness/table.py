"""Results as a pandas DataFrame: one row per Result, one column per column field of
convbench.result.Result (in its declared dtype), plus the raw samples as lists. CSV and JSON are
written and read here, by pandas, at full precision (floats round-trip exactly).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from convbench import files
from convbench.result import COLUMNS, DTYPES, LISTS, WITHIN_TOLERANCE, Result

#: Columns of the frame that are not in results.csv: each row's raw timings (samples.jsonl).
SAMPLE_COLUMNS = LISTS
#: Statuses of runs written before the one vocabulary, as read back now.
LEGACY_STATUSES = {"OK": "PASSED", "UNSUPPORTED": "UNIMPLEMENTED", "ERROR": "FAILED"}
_TEXT = [name for name, dtype in DTYPES.items() if dtype == "string"]
#: The columns of results.csv before each row named its machine (host ... worker): such files,
#: and those without the later columns (processes, process_spread), are read with the missing
#: columns empty, and never appended to.
OLD_COLUMNS = COLUMNS[:COLUMNS.index("host")]
#: The headers of results.csv files that can be read: COLUMNS and its older prefixes.
READABLE_HEADERS = (COLUMNS, OLD_COLUMNS, COLUMNS[:COLUMNS.index("processes")])


def to_frame(rows) -> pd.DataFrame:
    """Results, or mappings of column names to values (missing columns left empty), as a
    DataFrame in the declared dtypes; missing text is "" and missing sample lists are []."""
    records = []
    for r in rows:
        if isinstance(r, Result):
            records.append({**r.row(), **{name: getattr(r, name) for name in SAMPLE_COLUMNS}})
        else:
            records.append(dict(r))
    frame = pd.DataFrame.from_records(records, columns=list(COLUMNS) + list(SAMPLE_COLUMNS))
    for name, dtype in DTYPES.items():
        column = frame[name].astype(object).where(frame[name].notna(), None)
        frame[name] = column.astype(dtype)
    frame[_TEXT] = frame[_TEXT].fillna("")
    for name in SAMPLE_COLUMNS:
        frame[name] = [list(v) if isinstance(v, (list, tuple, np.ndarray)) else []
                       for v in frame[name]]
    return frame


def to_results(frame: pd.DataFrame) -> list[Result]:
    return [Result.from_row(row) for row in frame.to_dict("records")]


def timed(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that carry a speed: checked, within tolerance, timed."""
    return frame[frame["status"].isin(WITHIN_TOLERANCE) & frame["median_s"].notna()]


def write_csv(frame: pd.DataFrame, file, header: bool) -> None:
    """Append the frame's columns to an open text file (results.csv), with a header if asked.
    Line breaks in text become spaces, so that each row is one line (a reader can then tell a
    line cut short by a kill)."""
    out = frame.loc[:, list(COLUMNS)].copy()
    for name in _TEXT:
        out[name] = out[name].str.replace(r"[\r\n]+", " ", regex=True)
    out.to_csv(file, header=header, index=False)


def read_csv(path) -> pd.DataFrame:
    """results.csv as a frame in the declared dtypes (no samples: see samples.jsonl)."""
    frame = pd.read_csv(path, dtype=DTYPES, keep_default_na=False,
                        na_values={name: [""] for name in COLUMNS if name not in _TEXT})
    for name in COLUMNS[len(OLD_COLUMNS):]:
        if name not in frame:
            frame[name] = pd.Series("" if name in _TEXT else None, index=frame.index,
                                    dtype=DTYPES[name])
    frame["status"] = frame["status"].replace(LEGACY_STATUSES)
    return frame


def _plain(v):
    """A JSON value: None for missing and non-finite numbers, Python scalars for NumPy's."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if v is None or v is pd.NA:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_json(path, frame: pd.DataFrame, meta: dict) -> Path:
    """{"meta": meta, "rows": [every column and the samples]} (non-finite numbers as null)."""
    rows = [{k: _plain(v) for k, v in r.items()} for r in frame.to_dict("records")]
    return files.write_text(path, json.dumps({"meta": meta, "rows": rows}, indent=1))


def read_json(path) -> tuple[pd.DataFrame, dict]:
    """(rows, meta) of a results.json; ValueError when it is not one."""
    data = json.loads(Path(path).read_text())
    if not (isinstance(data, dict) and isinstance(data.get("rows"), list)
            and all(isinstance(r, dict) for r in data["rows"])
            and isinstance(data.get("meta", {}), dict)):
        raise ValueError("not a convbench results.json (an object with a list of rows)")
    frame = to_frame(data["rows"])
    frame["status"] = frame["status"].replace(LEGACY_STATUSES)
    return frame, data.get("meta", {})


def geomean(values) -> float | None:
    """The geometric mean of the positive values, None if there are none."""
    v = pd.Series(values, dtype="float64")
    v = v[v > 0]
    return float(np.exp(np.log(v).mean())) if len(v) else None
