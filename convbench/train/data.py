"""Data: scikit-learn's handwritten digits (shipped, no download), and loaders for MNIST's IDX
files and CIFAR-10's Python batches from a path the user gives."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass

import numpy as np


@dataclass
class Dataset:
    name: str
    x: np.ndarray          # (N, C, H, W) float32
    y: np.ndarray          # (N,) int64
    classes: int
    flips: bool            # whether horizontal flips keep the meaning (photos yes, digits no)

    def __len__(self):
        return len(self.y)


def load_digits() -> Dataset:
    """1797 8x8 grey digits from scikit-learn, scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sk  # lazy: scikit-learn is an optional extra
    d = sk()
    return Dataset("digits", (d.images / 16.0).astype(np.float32)[:, None],
                   d.target.astype(np.int64), 10, False)


def _open(path):
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def read_idx(path) -> np.ndarray:
    """An IDX file (MNIST's format): magic 0x00 0x00 type ndim, big-endian sizes, then data."""
    with _open(path) as f:
        head = f.read(4)
        if len(head) != 4 or head[:2] != b"\0\0":
            raise ValueError(f"{path}: not an IDX file (bad magic {head!r})")
        dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
        if head[2] not in dtypes:
            raise ValueError(f"{path}: unknown IDX data type 0x{head[2]:02x}")
        dims = struct.unpack(">" + "I" * head[3], f.read(4 * head[3]))
        data = np.frombuffer(f.read(), dtype=dtypes[head[2]])
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} values for shape {dims}")
    return data.reshape(dims)


def load_mnist(path: str, split: str = "train") -> Dataset:
    """MNIST (or Fashion-MNIST) IDX files in `path`:
    {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]."""
    prefix = "train" if split == "train" else "t10k"

    def find(kind):
        for ext in ("", ".gz"):
            p = os.path.join(path, f"{prefix}-{kind}-ubyte{ext}")
            if os.path.exists(p):
                return p
        raise FileNotFoundError(f"no {prefix}-{kind}-ubyte[.gz] in {path}")
    x = read_idx(find("images-idx3")).astype(np.float32) / 255.0
    y = read_idx(find("labels-idx1")).astype(np.int64)
    if len(x) != len(y):
        raise ValueError(f"{path}: {len(x)} images but {len(y)} labels")
    return Dataset("mnist", x[:, None], y, 10, False)


def load_cifar10(path: str, split: str = "train") -> Dataset:
    """CIFAR-10's Python batches in `path` (data_batch_1..5, test_batch): pickled dicts with
    b'data' (N, 3072) uint8 and b'labels'."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for n in names:
        p = os.path.join(path, n)
        if not os.path.exists(p):
            raise FileNotFoundError(f"no {n} in {path}")
        with open(p, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[b"labels"], dtype=np.int64))
    return Dataset("cifar10", np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys),
                   10, True)


class DataError(ValueError):
    """A --data value that names no data set, or data that cannot be read."""


def check_spec(spec: str) -> None:
    """DataError unless `spec` is 'digits', 'mnist:PATH' or 'cifar10:PATH' with PATH a folder."""
    if spec == "digits":
        return
    kind, _, path = str(spec).partition(":")
    if kind not in ("mnist", "cifar10") or not path:
        raise DataError(f"data={spec!r} must be 'digits', 'mnist:PATH' or 'cifar10:PATH'")
    if not os.path.isdir(path):
        raise DataError(f"data={spec!r}: {path!r} is not a folder")


def load(spec: str) -> Dataset:
    """'digits', 'mnist:PATH' or 'cifar10:PATH' (the training split; the test split is held out
    from it by `split`). DataError when the spec is wrong or the files cannot be read."""
    check_spec(spec)
    if spec == "digits":
        return load_digits()
    kind, _, path = spec.partition(":")
    try:
        return load_mnist(path) if kind == "mnist" else load_cifar10(path)
    except (OSError, ValueError, EOFError, KeyError, TypeError, pickle.UnpicklingError) as e:
        raise DataError(f"data={spec!r}: {e}") from None


def split(ds: Dataset, val_fraction: float, test_fraction: float, seed: int):
    """(train, val, test) index arrays from one seeded permutation."""
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= f < 1:
            raise ValueError(f"{name}={f} must be in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no "
                         "training data")
    idx = np.random.default_rng(seed).permutation(len(ds))
    n_test = int(round(test_fraction * len(ds)))
    n_val = int(round(val_fraction * len(ds)))
    return idx[n_test + n_val:], idx[n_test:n_test + n_val], idx[:n_test]


def augment(x: np.ndarray, rng: np.random.Generator, shift: int = 1,
            flips: bool = False) -> np.ndarray:
    """Random shifts by up to `shift` pixels (zero padding, then a random crop) and, where they keep
    the meaning, random horizontal flips."""
    N, C, H, W = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (shift, shift), (shift, shift)))
    dy, dx = rng.integers(0, 2 * shift + 1, size=(2, N))
    rows = dy[:, None] + np.arange(H)[None, :]
    cols = dx[:, None] + np.arange(W)[None, :]
    out = padded[np.arange(N)[:, None, None, None], np.arange(C)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    if flips:
        flip = rng.random(N) < 0.5
        out[flip] = out[flip][..., ::-1]
    return np.ascontiguousarray(out)
