"""convbench's own GEMM: C = op(A) @ op(B) or C += op(A) @ op(B), float32 and float64, in Numba.

The classic Goto/BLIS structure: K is cut into blocks of KC, M into MC and N into NC; each
KC x NC block of B is packed into panels of NR columns and each MC x KC block of A into panels of
MR rows, zero-padded at the edges, and an MR x NR register tile (the micro-kernel, generated per
shape in `_gemm_kernels.py`) runs over every pair of panels with its accumulators in vector
registers. Threads take equal runs of the work units: the products of a batch, each cut along the
larger of M and N into pieces of whole tiles; each thread packs into its own buffers.

Operands are strided NumPy views, used in place when either of their strides is one element
(transposes included); other layouts are copied first.
"""
from __future__ import annotations

import functools
import math
import os
import threading
from dataclasses import dataclass

import numpy as np

from convbench.kernels._tiles import LANES, SHAPES, SLOWER, kernel_suffix
from convbench.kernels.compiled import KERNELS
from convbench.kernels.peak import isa as _isa

#: Below this many multiply-adds a call runs on one thread: waking the others costs more.
SERIAL_WORK = 1 << 21


@dataclass(frozen=True)
class GemmParams:
    """A register tile (mr, nr), one of micro_shapes(dtype), and cache blocks: kc, the depth of
    one pass (an mr x kc panel of A stays in L1 while it meets every panel of B); nc, the columns
    of B packed at once (a kc x nc block that stays in L2); mc, the rows of A packed at once.
    Any positive blocks are valid (they are rounded up to whole tiles); a tuner sweeps them.
    When C is stored column-major the product runs as C^T = B^T A^T, and the tile applies to
    that."""
    mr: int
    nr: int
    kc: int
    mc: int
    nc: int

    def __post_init__(self):
        for name in ("kc", "mc", "nc"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive int")


def micro_shapes(dtype=np.float32, isa: str | None = None) -> tuple[tuple[int, int], ...]:
    """The (MR, NR) tiles used for dtype on isa ('avx512', 'avx2', 'other'; default: what Numba
    compiles for here), best first."""
    isa = isa or _isa()
    key = (isa, np.dtype(dtype).name)
    if key not in SHAPES:
        raise ValueError(f"dtype={np.dtype(dtype).name!r} must be float32 or float64")
    return SHAPES[key]


@functools.cache
def _cache_bytes() -> tuple[int, int]:
    """Per-core L1d and L2 sizes from sysfs (32 KiB and 1 MiB where it is not readable)."""
    l1, l2 = 32 << 10, 1 << 20
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(base):
            path = os.path.join(base, entry)
            if not entry.startswith("index"):
                continue
            with open(os.path.join(path, "level")) as f:
                level = int(f.read())
            with open(os.path.join(path, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(path, "size")) as f:
                text = f.read().strip()
            size = int(text[:-1]) * {"K": 1 << 10, "M": 1 << 20}[text[-1]] if text[-1] in "KM" \
                else int(text)
            if level == 1 and kind in ("Data", "Unified"):
                l1 = size
            elif level == 2:
                l2 = size
    except (OSError, ValueError, KeyError):
        pass
    return l1, l2


def _useful(mr: int, nr: int, m: int, n: int) -> float:
    """The share of the padded tiles' work that lies inside the m x n product."""
    return (m * n) / (math.ceil(m / mr) * mr * math.ceil(n / nr) * nr)


def default_params(m: int, n: int, k: int, dtype=np.float32, isa: str | None = None,
                   shape: tuple[int, int] | None = None) -> GemmParams:
    """The tile and blocks for an m x n x k product: the tile that does the most useful work per
    cycle (the share of its padded tiles that lies inside m x n, times its relative speed; ties
    to the earlier one), then kc so an MR x kc panel of A fills 40% of L1, nc so a kc x nc block
    of B fills half of L2, and mc a thousand rows."""
    dtype = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
    return _default_params(int(m), int(n), int(k), dtype, isa or _isa(),
                           None if shape is None else tuple(shape))


@functools.lru_cache(maxsize=4096)
def _default_params(m, n, k, dtype, isa, shape) -> GemmParams:
    shapes = micro_shapes(dtype, isa)
    if shape is None:
        lanes = LANES[isa, dtype.name]
        scores = [_useful(mr, nr, m, n) * SLOWER.get((mr, nr, lanes), 1.0) for mr, nr in shapes]
        # a later tile must beat the earlier ones by 5% (noise in the speeds)
        best = max(scores)
        shape = next(s for s, sc in zip(shapes, scores) if sc >= best / 1.05)
    mr, nr = shape
    if (mr, nr) not in shapes:
        raise ValueError(f"shape={shape!r} must be one of {shapes} for {dtype} on {isa}")
    item = np.dtype(dtype).itemsize
    l1, l2 = _cache_bytes()
    kc = max(64, min(768, l1 * 2 // 5 // (mr * item) // 8 * 8))
    nc = max(nr, min(4096, l2 // 2 // (kc * item) // nr * nr))
    mc = max(mr, 1024 // mr * mr)
    return GemmParams(mr, nr, kc, mc, nc)


def _check_array(name: str, x, ndims: tuple[int, ...]) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.ndim not in ndims:
        raise ValueError(f"{name}.ndim={x.ndim} must be " + " or ".join(map(str, ndims)))
    if x.dtype.char not in "fd" or x.dtype.byteorder == ">":
        raise TypeError(f"{name}.dtype={x.dtype} must be float32 or float64")
    return x


def _flat(x: np.ndarray, writable: bool = False):
    """A 3-D array as (1-D contiguous view of its memory from its first element, strides in
    elements), or None when it cannot be used in place (negative or unaligned strides, or
    neither of the last two dimensions contiguous)."""
    item = x.itemsize
    (b, r, c), (sb, rs, cs) = x.shape, x.strides
    if sb % item or rs % item or cs % item:
        return None
    # a dimension of size 1 has no stride of its own: 0 for the batch, contiguous for the others
    sb = 0 if b == 1 else sb // item
    rs = 1 if r == 1 else rs // item
    cs = 1 if c == 1 else cs // item
    if sb < 0 or rs < 0 or cs < 0 or (rs != 1 and cs != 1) or not x.flags.aligned \
            or (writable and not x.flags.writeable):
        return None
    if x.flags.c_contiguous:
        flat = x.reshape(-1)         # a view, and an order of magnitude cheaper than as_strided
    elif b == 1 and x[0].T.flags.c_contiguous:
        flat = x[0].T.reshape(-1)    # a transposed contiguous matrix
    else:
        extent = (b - 1) * sb + (r - 1) * rs + (c - 1) * cs + 1
        flat = np.lib.stride_tricks.as_strided(x, shape=(extent,), strides=(item,),
                                               writeable=x.flags.writeable)
    return flat, sb, rs, cs


#: Packing buffers start on this many elements (64 bytes for float32): a vector load that
#: straddles two cache lines costs two.
_ALIGN = 16

_local = threading.local()


def _workspace(size: int, dtype) -> np.ndarray:
    """A 64-byte aligned buffer of at least size elements, kept per Python thread and dtype, so
    that calls do not allocate (and page-fault) fresh packing buffers; two Python threads never
    share one."""
    cache = _local.__dict__.setdefault("workspaces", {})
    dtype = np.dtype(dtype)
    ws = cache.get(dtype)
    if ws is None or ws.size < size:
        raw = np.empty(size + 64 // dtype.itemsize, dtype)
        skip = (-raw.ctypes.data % 64) // dtype.itemsize
        ws = raw[skip:skip + size]
        cache[dtype] = ws
    return ws


def _blocks(m: int, n: int, k: int, p: GemmParams) -> tuple[int, int, int]:
    """(kcb, mcb, ncb): K cut into equal blocks of at most p.kc; M and N blocks of at most p.mc
    and p.nc, in whole tiles."""
    kb = -(-k // p.kc)
    kcb = -(-k // kb)
    mcb = -(-min(p.mc, m) // p.mr) * p.mr
    ncb = -(-min(p.nc, n) // p.nr) * p.nr
    return kcb, mcb, ncb


def _split(batch: int, m: int, n: int, p: GemmParams, threads: int) -> tuple[int, bool, int]:
    """(pieces per product, split along n?, threads to use)."""
    split_n = n >= m
    tiles = math.ceil(n / p.nr) if split_n else math.ceil(m / p.mr)
    if threads <= 1 or batch * m * n < 2 * p.mr * p.nr:
        return 1, split_n, 1
    if batch >= 4 * threads:
        nsplit = 1
    else:
        # enough pieces that every thread gets the same number of units
        nsplit = threads // math.gcd(batch, threads)
    nsplit = max(1, min(nsplit, tiles))
    return nsplit, split_n, min(threads, batch * nsplit)


@dataclass(frozen=True, eq=False)
class Packed:
    """op(x) packed once into the panels of one register tile and K blocking, as the left
    (side 'a') or right (side 'b') operand of many products: an RNN's weights over its time
    steps, a layer's weights over a batch. gemm and gemm_batched take it in place of that operand
    (the same matrix for every product of a batch). Made by `pack`."""
    side: str
    rows: int
    cols: int
    params: GemmParams
    data: np.ndarray

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def shape(self) -> tuple[int, int]:
        """The shape of op(x), the operand it stands for."""
        return (self.rows, self.cols)


def pack(x: np.ndarray, side: str, *, other: int, trans: bool = False,
         params: GemmParams | None = None) -> Packed:
    """op(x) (x.T with trans) packed as operand `side` ('a': the left, M x K; 'b': the right,
    K x N) of products whose other outer dimension is `other` (N for a left operand, M for a
    right one; it picks the tile, as in default_params, unless params is given)."""
    _check_array("x", x, (2,))
    if side not in ("a", "b"):
        raise ValueError(f"side={side!r} must be 'a' or 'b'")
    if not isinstance(other, (int, np.integer)) or other < 1:
        raise ValueError(f"other={other!r} must be a positive int")
    X = x.T if trans else x
    if side == "a":
        (m, k), n = X.shape, int(other)
    else:
        (k, n), m = X.shape, int(other)
    p = params or default_params(m, n, k, x.dtype)
    _check_tile(p, x.dtype)
    rows, cols = X.shape
    if k == 0 or rows == 0 or cols == 0:
        return Packed(side, rows, cols, p, np.zeros(0, x.dtype))
    kcb, _, _ = _blocks(m, n, k, p)
    flat = _flat(X[None]) or _flat(np.ascontiguousarray(X)[None])
    xf, _, rs, cs = flat
    kern = KERNELS.load()
    if side == "a":
        pad = -(-m // p.mr) * p.mr
        data = _aligned(k * pad, x.dtype)
        fn = getattr(kern, f"pack_a_{p.mr}")
        for pc in range(0, k, kcb):
            fn(xf[pc * cs:], rs, cs, m, min(kcb, k - pc), data[pc * pad:])
    else:
        pad = -(-n // p.nr) * p.nr
        data = _aligned(k * pad, x.dtype)
        fn = getattr(kern, f"pack_b_{p.nr}")
        for pc in range(0, k, kcb):
            fn(xf[pc * rs:], rs, cs, min(kcb, k - pc), n, data[pc * pad:])
    return Packed(side, rows, cols, p, data)


def _aligned(size: int, dtype) -> np.ndarray:
    """A new 64-byte aligned 1-D array of size elements."""
    dtype = np.dtype(dtype)
    raw = np.empty(size + 64 // dtype.itemsize, dtype)
    skip = (-raw.ctypes.data % 64) // dtype.itemsize
    return raw[skip:skip + size]


def _check_tile(p: GemmParams, dtype) -> None:
    if (p.mr, p.nr) not in _shapes_here(dtype):
        raise ValueError(f"params tile ({p.mr}, {p.nr}) must be one of "
                         f"{micro_shapes(dtype)} for {np.dtype(dtype)} here")


@functools.lru_cache(maxsize=None)
def _shapes_here(dtype: np.dtype) -> tuple:
    return micro_shapes(dtype)


@functools.lru_cache(maxsize=None)
def _suffix(mr: int, nr: int, dtype: np.dtype) -> str:
    return kernel_suffix(mr, nr, LANES[_isa(), dtype.name])


def _via_temporary(a3, b3, c3, accumulate, params, threads) -> None:
    """For an out that cannot be written in place (no unit stride, or overlapping an input)."""
    tmp = np.empty(c3.shape, c3.dtype)
    _run(a3, b3, tmp, False, params, threads)
    if accumulate:
        c3 += tmp
    else:
        c3[...] = tmp


def _run(a3, b3, c3: np.ndarray, accumulate: bool, params: GemmParams | None,
         threads: int | None) -> None:
    """c3[i] (+)= a3[i] @ b3[i] for 3-D views (a batch stride of 0 broadcasts); one of a3 and b3
    may be a Packed (then params is its own)."""
    pre = 1 if isinstance(a3, Packed) else 2 if isinstance(b3, Packed) else 0
    batch, m, n = c3.shape
    k = a3.shape[-1]
    if batch == 0 or m == 0 or n == 0:
        return
    if k == 0:
        if not accumulate:
            c3[...] = 0
        return
    cf = _flat(c3, writable=True)
    if cf is None or cf[3] != 1:
        if cf is not None and cf[2] == 1 and not pre:
            # C with unit row stride: compute C^T = B^T A^T into it instead
            _run(b3.transpose(0, 2, 1), a3.transpose(0, 2, 1), c3.transpose(0, 2, 1),
                 accumulate, params, threads)
            return
        return _via_temporary(a3, b3, c3, accumulate, params, threads)
    if any(isinstance(x, np.ndarray) and np.may_share_memory(c3, x) for x in (a3, b3)):
        return _via_temporary(a3, b3, c3, accumulate, params, threads)
    packed = a3 if pre == 1 else b3 if pre == 2 else None
    dummy = (packed.data, 0, 0, 0) if packed is not None else None
    af = dummy if pre == 1 else _flat(a3) or _flat(np.ascontiguousarray(a3))
    bf = dummy if pre == 2 else _flat(b3) or _flat(np.ascontiguousarray(b3))
    p = packed.params if packed is not None else params or default_params(m, n, k, c3.dtype)
    import numba  # heavy: importing convbench.kernels must not load it
    nthreads = numba.get_num_threads() if threads is None else threads
    if batch * m * n * k < SERIAL_WORK:
        nthreads = 1
    nsplit, split_n, nthreads = _split(batch, m, n, p, nthreads)
    _check_tile(p, c3.dtype)
    kern = KERNELS.load()
    name = _suffix(p.mr, p.nr, c3.dtype)
    kcb, mcb, ncb = _blocks(m, n, k, p)
    boff = -(-mcb * kcb // _ALIGN) * _ALIGN
    wsize = -(-(boff + ncb * kcb) // _ALIGN) * _ALIGN
    shared = 0
    if batch == 1 and nsplit > 1 and not pre:
        # the operand every piece uses, packed once for all threads (see run_par_*)
        shared = k * (-(-m // p.mr) * p.mr if split_n else -(-n // p.nr) * p.nr)
    ws = _workspace(nthreads * wsize + shared, c3.dtype)
    args = (af[0], af[2], af[3], af[1], bf[0], bf[2], bf[3], bf[1], cf[0], cf[2], cf[1],
            batch, m, n, k, bool(accumulate), kcb, mcb, ncb, nsplit, split_n, nthreads,
            ws, wsize, boff, ws if packed is None else packed.data, pre)
    if nthreads == 1:
        getattr(kern, "run_" + name)(*args)
        return
    previous = numba.get_num_threads()
    # set_num_threads acts on the calling thread's parallel regions only
    numba.set_num_threads(min(nthreads, numba.config.NUMBA_NUM_THREADS))
    try:
        getattr(kern, "run_par_" + name)(*args)
    finally:
        numba.set_num_threads(previous)


def _operand(name: str, x, trans: bool, batched: bool, side: str):
    """x as a 3-D (batch, rows, cols) view of op(x); a Packed as it is."""
    if isinstance(x, Packed):
        if x.side != side:
            raise ValueError(f"{name} is packed as operand {x.side!r}, not {side!r}")
        if trans:
            raise ValueError(f"trans_{name}=True with a packed {name}: pack op({name}) instead")
        return x
    _check_array(name, x, (2, 3) if batched else (2,))
    if x.ndim == 2:
        x = x[None]
    elif not batched:
        raise ValueError(f"{name}.ndim={x.ndim} must be 2")
    return x.transpose(0, 2, 1) if trans else x


def gemm(a, b, out: np.ndarray | None = None, *,
         accumulate: bool = False, trans_a: bool = False, trans_b: bool = False,
         params: GemmParams | None = None, threads: int | None = None) -> np.ndarray:
    """out = op(a) @ op(b), or out += op(a) @ op(b) with accumulate=True; op(x) is x.T where
    trans_x. a: (M, K) (or (K, M) with trans_a), b: (K, N) (or (N, K)), out: (M, N); all float32
    or all float64. Strided views are used without copying when one of their strides is one
    element. Either a or b may be a Packed (see pack; it brings its own params). params overrides
    the tile and blocks (see default_params); threads defaults to Numba's thread count. Returns
    out."""
    _check_threads(threads)
    A = _operand("a", a, trans_a, False, "a")
    B = _operand("b", b, trans_b, False, "b")
    out3 = _prepare(A, B, out, accumulate, (2,))
    _run(A, B, out3, accumulate, params, threads)
    return out if out is not None else out3[0]


def gemm_batched(a, b, out: np.ndarray | None = None, *,
                 accumulate: bool = False, trans_a: bool = False, trans_b: bool = False,
                 params: GemmParams | None = None, threads: int | None = None) -> np.ndarray:
    """out[i] = op(a[i]) @ op(b[i]) (+= with accumulate) for i in range(batch). a: (batch, M, K)
    or (M, K) shared by every product (e.g. a 1x1 convolution's weights against each image's
    (C, H*W)), or a Packed; b: (batch, K, N), (K, N) or a Packed; transposes as in gemm, per
    matrix. out: (batch, M, N). Threads take whole products when there are many, and split each
    one otherwise."""
    _check_threads(threads)
    A = _operand("a", a, trans_a, True, "a")
    B = _operand("b", b, trans_b, True, "b")
    if _ndim(a) == 2 and _ndim(b) == 2:
        raise ValueError("a and b are both 2-D: gemm_batched needs a batch (use gemm)")
    if isinstance(A, Packed) and isinstance(B, Packed):
        raise ValueError("a and b are both packed: at most one operand may be")
    if not isinstance(A, Packed) and not isinstance(B, Packed) and A.shape[0] != B.shape[0]:
        if A.shape[0] == 1 and a.ndim == 2:
            A = _repeat(A, B.shape[0])
        elif B.shape[0] == 1 and b.ndim == 2:
            B = _repeat(B, A.shape[0])
        else:
            raise ValueError(f"a has batch {A.shape[0]} but b has batch {B.shape[0]}")
    out3 = _prepare(A, B, out, accumulate, (3,))
    _run(A, B, out3, accumulate, params, threads)
    return out if out is not None else out3


def _ndim(x) -> int:
    return 2 if isinstance(x, Packed) else x.ndim


def _repeat(x: np.ndarray, batch: int) -> np.ndarray:
    """x (1, r, c) seen batch times (batch stride 0) without a copy. Unlike np.broadcast_to the
    view stays writeable when x is (it is only read), so that it compiles to the same kernel
    signature as every other writeable input."""
    return np.lib.stride_tricks.as_strided(x, (batch,) + x.shape[1:], (0,) + x.strides[1:])


def _dims(X) -> tuple[int, int, int]:
    """(batch, rows, cols) of a 3-D operand view; a Packed counts as a batch of one."""
    return (1,) + X.shape if isinstance(X, Packed) else X.shape


def _prepare(A, B, out, accumulate, out_ndims):
    """Checks shapes and dtypes; returns out as a 3-D view (a new array when out is None)."""
    if A.dtype != B.dtype:
        raise TypeError(f"a.dtype={A.dtype} and b.dtype={B.dtype} must be equal")
    (ba, m, ka), (bb, kb, n) = _dims(A), _dims(B)
    if ka != kb:
        raise ValueError(f"op(a) is {m}x{ka} but op(b) is {kb}x{n}: inner dimensions differ")
    if isinstance(A, Packed) and isinstance(B, Packed):
        raise ValueError("a and b are both packed: at most one operand may be")
    batch = max(ba, bb)
    want = (m, n) if out_ndims == (2,) else (batch, m, n)
    if out is None:
        if accumulate:
            raise ValueError("accumulate=True needs out")
        return np.empty((batch, m, n), A.dtype)
    _check_array("out", out, out_ndims)
    if out.shape != want:
        raise ValueError(f"out.shape={out.shape} must be {want}")
    if out.dtype != A.dtype:
        raise TypeError(f"out.dtype={out.dtype} must be {A.dtype} like a and b")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    return out[None] if out.ndim == 2 else out


def _check_threads(threads) -> None:
    if threads is not None and (not isinstance(threads, (int, np.integer)) or threads < 1):
        raise ValueError(f"threads={threads!r} must be a positive int")
