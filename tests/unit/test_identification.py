"""The 1:N arithmetic of consentry.faces.identification against known values."""

from __future__ import annotations

import math

import pytest

from consentry.errors import InputError
from consentry.faces.identification import (
    extrapolate,
    fpir_at,
    max_gallery,
    pairs_needed,
    rate_for_fpir,
    rate_upper_bound,
)


def test_fpir_grows_with_the_gallery_as_the_issue_measured() -> None:
    # 0.29% per subject: about 9% at 34 subjects, 25% at 100, 94% at 1,000
    assert fpir_at(0.0029, 34) == pytest.approx(0.094, abs=1e-3)
    assert fpir_at(0.0029, 100) == pytest.approx(0.252, abs=1e-3)
    assert fpir_at(0.0029, 1000) == pytest.approx(0.945, abs=1e-3)
    assert fpir_at(0.0, 10**6) == 0.0


def test_rate_for_fpir_and_max_gallery_invert_fpir_at() -> None:
    for fpir, n in [(0.01, 1000), (0.05, 10**4), (0.001, 10**6)]:
        rate = rate_for_fpir(fpir, n)
        assert fpir_at(rate, n) == pytest.approx(fpir, rel=1e-9)
        assert fpir_at(rate, max_gallery(fpir, rate)) <= fpir * (1 + 1e-9)
        assert fpir_at(rate, max_gallery(fpir, rate) + 2) > fpir
    assert max_gallery(0.01, 0.0) == 2**63 - 1


def test_clopper_pearson_matches_published_values() -> None:
    # one-sided 95% upper bounds: 0/n is 1 - 0.05**(1/n); 1/10 is 0.3942 (closed form:
    # P(X <= 1) = q**10 + 10 p q**9 = 0.05); 5/100: the binomial CDF there is 0.05
    assert rate_upper_bound(0, 100) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-12)
    p = rate_upper_bound(1, 10)
    assert p == pytest.approx(0.3942, abs=1e-4)
    assert (1 - p) ** 10 + 10 * p * (1 - p) ** 9 == pytest.approx(0.05, abs=1e-9)
    p = rate_upper_bound(5, 100)
    cdf = sum(math.comb(100, k) * p**k * (1 - p) ** (100 - k) for k in range(6))
    assert cdf == pytest.approx(0.05, abs=1e-9)
    assert rate_upper_bound(10, 10) == 1.0
    # the bound always lies above the point estimate
    assert rate_upper_bound(12, 4158) > 12 / 4158


def test_pairs_needed_is_the_rule_of_three() -> None:
    rate = rate_for_fpir(0.01, 1000)  # about 1e-5 per subject
    needed = pairs_needed(rate)
    assert needed == pytest.approx(3 / rate, rel=0.01)
    assert rate_upper_bound(0, needed) <= rate < rate_upper_bound(0, needed - 1)


def test_extrapolation_bounds_lie_above_the_point_estimates() -> None:
    rows = extrapolate(12, 4158, (1000, 10**4))
    assert [r.gallery for r in rows] == [1000, 10**4]
    assert all(r.fpir <= r.fpir_bound <= 1.0 for r in rows)


@pytest.mark.parametrize(
    "call",
    [
        lambda: fpir_at(1.0, 10),
        lambda: fpir_at(-0.1, 10),
        lambda: fpir_at(math.nan, 10),
        lambda: fpir_at(0.1, 0),
        lambda: rate_for_fpir(0.0, 10),
        lambda: rate_upper_bound(3, 2),
        lambda: pairs_needed(0.0),
    ],
)
def test_out_of_domain_values_are_input_errors(call: object) -> None:
    with pytest.raises(InputError):
        call()  # type: ignore[operator]
