"""1:N identification arithmetic: from a per-subject false-match rate to FPIR at gallery size N.

The gate is a 1:N search: an unregistered face is compared with every one of the
N registered subjects, and it is *falsely identified* if it matches any of them.
With ``p`` the probability that a stranger's face matches one given other subject
(the per-subject false-match rate, measured on impostor probe-subject pairs, each
pair scored as the best similarity over the subject's enrolled photos), and the
subjects independent, the false-positive identification rate is

    FPIR(N) = 1 - (1 - p) ** N

(NIST FRTE 1:N's FPIR; FNIR, a registered face not found, does not grow with N
for an exact search and is measured directly).

Invariants
- Every function is pure and total over its documented domain; a value outside
  it is an :class:`~consentry.errors.InputError`, never a NaN.
- :func:`rate_upper_bound` is the exact one-sided Clopper-Pearson bound: with
  ``errors`` false matches in ``trials`` pairs, the true rate is at most the bound
  with probability ``confidence``. With no error it is ``1 - (1 - c) ** (1 / n)``
  (about ``3 / n`` at 95%: the rule of three).
- :func:`pairs_needed` is the least number of error-free impostor pairs whose
  bound reaches a target rate: a calibration with fewer pairs cannot show the
  rate, and is refused with this number.
- :func:`rate_for_fpir` and :func:`max_gallery` are inverses of :func:`fpir_at`:
  ``fpir_at(rate_for_fpir(f, n), n) == f`` and ``fpir_at(p, max_gallery(f, p)) <= f``
  (up to floating point).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from consentry.errors import InputError

__all__ = [
    "Extrapolation",
    "extrapolate",
    "fpir_at",
    "max_gallery",
    "pairs_needed",
    "rate_for_fpir",
    "rate_upper_bound",
]

DEFAULT_CONFIDENCE = 0.95


def _check_rate(name: str, value: float, *, open_low: bool = False) -> None:
    low_ok = value > 0.0 if open_low else value >= 0.0
    if not (math.isfinite(value) and low_ok and value < 1.0):
        bound = "(0, 1)" if open_low else "[0, 1)"
        raise InputError(f"{name} must be in {bound}, got {value!r}")


def _check_gallery(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"gallery size must be a positive integer, got {n!r}")


def fpir_at(rate: float, gallery: int) -> float:
    """The expected FPIR with ``gallery`` registered subjects, each matched by a
    stranger's face with probability ``rate``."""
    _check_rate("per-subject false-match rate", rate)
    _check_gallery(gallery)
    return -math.expm1(gallery * math.log1p(-rate))


def rate_for_fpir(fpir: float, gallery: int) -> float:
    """The per-subject false-match rate that gives exactly ``fpir`` at ``gallery``."""
    _check_rate("FPIR", fpir, open_low=True)
    _check_gallery(gallery)
    return -math.expm1(math.log1p(-fpir) / gallery)


def max_gallery(fpir: float, rate: float) -> int:
    """The largest gallery whose expected FPIR stays within ``fpir`` at ``rate``
    (``sys.maxsize`` for a rate of zero: no gallery size breaks the budget)."""
    _check_rate("FPIR", fpir, open_low=True)
    _check_rate("per-subject false-match rate", rate)
    if rate == 0.0:
        return 2**63 - 1
    return max(0, math.floor(math.log1p(-fpir) / math.log1p(-rate)))


def _binomial_cdf(errors: int, trials: int, rate: float) -> float:
    """P(X <= errors) for X ~ Binomial(trials, rate), summed in log space."""
    if rate <= 0.0:
        return 1.0
    if rate >= 1.0:
        return 1.0 if errors >= trials else 0.0
    log_p, log_q = math.log(rate), math.log1p(-rate)
    terms = [
        math.lgamma(trials + 1)
        - math.lgamma(k + 1)
        - math.lgamma(trials - k + 1)
        + k * log_p
        + (trials - k) * log_q
        for k in range(errors + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def rate_upper_bound(errors: int, trials: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound on a rate seen ``errors`` times in ``trials``."""
    if trials < 1 or errors < 0 or errors > trials:
        raise InputError(f"need 0 <= errors <= trials and trials >= 1, got {errors}/{trials}")
    _check_rate("confidence", confidence, open_low=True)
    if errors == trials:
        return 1.0
    alpha = 1.0 - confidence
    if errors == 0:
        return -math.expm1(math.log(alpha) / trials)
    low, high = errors / trials, 1.0
    for _ in range(200):  # bisection: the CDF falls as the rate rises
        mid = (low + high) / 2
        if _binomial_cdf(errors, trials, mid) > alpha:
            low = mid
        else:
            high = mid
        if high - low <= 1e-12 * max(high, 1e-300):
            break
    return high


def pairs_needed(rate: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """Error-free impostor pairs needed before the bound on the rate reaches ``rate``."""
    _check_rate("target false-match rate", rate, open_low=True)
    _check_rate("confidence", confidence, open_low=True)
    return math.ceil(math.log(1.0 - confidence) / math.log1p(-rate))


@dataclass(frozen=True)
class Extrapolation:
    """FPIR at one gallery size: from the measured per-subject rate, and from its bound."""

    gallery: int
    fpir: float  # from the point estimate errors / trials
    fpir_bound: float  # from the Clopper-Pearson upper bound at ``confidence``


def extrapolate(
    errors: int,
    trials: int,
    galleries: tuple[int, ...],
    confidence: float = DEFAULT_CONFIDENCE,
) -> list[Extrapolation]:
    """FPIR against N for a per-subject rate seen ``errors`` times in ``trials`` pairs."""
    bound = rate_upper_bound(errors, trials, confidence)
    point = errors / trials
    return [
        Extrapolation(n, fpir_at(point, n), fpir_at(min(bound, 1.0 - 1e-16), n))
        for n in galleries
    ]
