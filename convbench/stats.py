"""Statistics derived from raw timing samples (seconds). The median is the headline."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: A spread (IQR / median) above this is flagged as noisy.
NOISY_RELATIVE_IQR = 0.10


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    iqr: float
    min: float
    mean: float
    ci_low: float       # confidence interval of the median (distribution-free)
    ci_high: float
    outliers: int       # samples beyond 1.5 IQR from the quartiles (Tukey)
    noisy: bool

    @property
    def relative_iqr(self) -> float:
        return self.iqr / self.median if self.median > 0 else float("inf")

    def as_dict(self) -> dict:
        return asdict(self)


def median_ci(sorted_samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics: the widest
    symmetric pair (x_(k), x_(n-k+1)) whose binomial coverage reaches `confidence`. With too few
    samples for that coverage the full range is returned."""
    x = sorted_samples
    n = len(x)
    if n == 0:
        return float("nan"), float("nan")
    best = (float(x[0]), float(x[-1]))
    total, tail, term = 2 ** n, 0, 1               # term: C(n, k - 1)
    for k in range(1, n // 2 + 1):
        # P(x_(k) <= median < x_(n-k+1)) = sum_{i=k}^{n-k} C(n, i) / 2^n
        #                                 = 1 - 2 sum_{i<k} C(n, i) / 2^n (in exact integers:
        # 2.0 ** n overflows past a thousand samples, e.g. those of several processes together)
        tail += term
        term = term * (n - k + 1) // k
        coverage = (total - 2 * tail) / total
        if coverage < confidence:
            break
        best = (float(x[k - 1]), float(x[n - k]))
    return best


def summarize(samples) -> Summary:
    x = np.sort(np.asarray(samples, dtype=np.float64))
    if x.size == 0:
        raise ValueError("samples must not be empty")
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    iqr = float(q3 - q1)
    outliers = int(np.sum((x < q1 - 1.5 * iqr) | (x > q3 + 1.5 * iqr)))
    lo, hi = median_ci(x)
    noisy = bool(med > 0 and iqr / med > NOISY_RELATIVE_IQR)
    return Summary(int(x.size), float(med), iqr, float(x[0]), float(x.mean()), lo, hi, outliers,
                   noisy)
