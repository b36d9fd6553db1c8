"""The 1:N operating point of consentry.faces.calibration_1n on synthetic scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from consentry.errors import CalibrationRejectedError, InputError
from consentry.faces.calibration_1n import (
    IdentificationScores,
    check_budgets,
    identification_scores,
    operating_point,
    operating_point_problems,
    threshold_for_rate,
)
from consentry.faces.identification import max_gallery, rate_for_fpir, rate_upper_bound
from consentry.identity.budget import GalleryBudget


def _most_errors(n: int, target: float) -> int:
    """The largest error count whose bound is within ``target``, by a plain scan."""
    errors = 0
    while errors + 1 < n and rate_upper_bound(errors + 1, n) <= target:
        errors += 1
    return errors


def test_threshold_is_the_lowest_whose_bound_meets_the_target() -> None:
    impostor = np.arange(100) / 100  # 0.00 .. 0.99
    # bounds at 100 pairs: 0 errors 0.0295, 1 error 0.0466, 2 errors 0.0616
    point = threshold_for_rate(impostor, 0.05, "test")
    assert point.errors == 1 and point.rate == 0.01
    assert point.threshold == float(np.nextafter(0.98, np.inf))  # 0.99 passes, 0.98 not
    assert point.rate_bound == rate_upper_bound(1, 100) <= 0.05
    # one step lower would let 0.98 pass: 2 errors, bound 0.0616 > 0.05
    assert rate_upper_bound(2, 100) > 0.05
    # a target met only with no error: just above the best impostor
    strict = threshold_for_rate(impostor, 0.03, "test")
    assert (strict.errors, strict.threshold) == (0, float(np.nextafter(0.99, np.inf)))


def test_ties_are_counted_against_the_threshold() -> None:
    impostor = np.array([0.9, 0.9, 0.9] + [0.1] * 297)  # 300 pairs, three tied at the top
    point = threshold_for_rate(impostor, 0.01, "test")  # 0 errors: bound 0.00994; 1: 0.0157
    assert point.errors == 0 and point.threshold > 0.9
    loose = threshold_for_rate(impostor, 0.022, "test")  # 2 allowed, but the tie holds three
    assert _most_errors(300, 0.022) == 2 and loose.errors == 0 and loose.threshold > 0.9


def test_a_set_too_small_is_refused_with_the_pairs_it_needs() -> None:
    # 0.05 needs 59 error-free pairs (1 - 0.05**(1/59) <= 0.05 < 1 - 0.05**(1/58))
    with pytest.raises(CalibrationRejectedError, match=r"has 58 impostor .* at least 59"):
        threshold_for_rate(np.zeros(58), 0.05, "test")
    assert threshold_for_rate(np.zeros(59), 0.05, "test").errors == 0
    assert isinstance(CalibrationRejectedError("x"), InputError)


def test_identification_scores_are_best_over_each_gallery_leave_one_out() -> None:
    a0, a1 = np.array([1.0, 0.0, 0.0]), np.array([0.8, 0.6, 0.0])
    b0, c0 = np.array([0.0, 1.0, 0.0]), np.array([0.6, 0.0, 0.8])
    scores = identification_scores(["a", "a", "b", "c"], np.stack([a0, a1, b0, c0]))
    assert (scores.probes, scores.subjects) == (4, 3)
    assert sorted(scores.genuine.tolist()) == pytest.approx([0.8, 0.8])  # b, c: no other photo
    # 4 probes x 2 other identities; b0 vs a = max(0, 0.6), c0 vs a = max(0.6, 0.48)
    expected = [0.0, 0.6, 0.6, 0.48, 0.6, 0.0, 0.6, 0.0]  # a0: b, c; a1: b, c; b0: a, c; c0: a, b
    assert scores.impostor.tolist() == pytest.approx(expected)
    with pytest.raises(InputError):
        identification_scores(["a", "a"], np.stack([a0, a1]))  # one identity
    with pytest.raises(InputError):
        identification_scores(["a", "b"], np.stack([a0, b0]))  # no genuine probe


def test_operating_point_at_n() -> None:
    impostor = np.arange(10_000) / 10_000
    genuine = np.array([0.995] * 90 + [0.9995] * 5 + [0.0] * 5)  # 5% far below everything
    scores = IdentificationScores(genuine, impostor, 100, 10)
    point = operating_point(scores, 0.01, 0.05, 4)
    ranked = np.sort(impostor)[::-1]
    for chosen, fpir in ((point.upper, 0.01), (point.review, 0.05)):
        target = rate_for_fpir(fpir, 4)
        errors = _most_errors(10_000, target)
        assert chosen.target_rate == target
        assert chosen.threshold == float(np.nextafter(ranked[errors], np.inf))
        assert chosen.errors == errors and chosen.rate_bound <= target
    assert point.review.threshold < point.upper.threshold
    budget = min(
        max_gallery(0.01, point.upper.rate_bound), max_gallery(0.05, point.review.rate_bound)
    )
    assert point.max_gallery == budget >= 4
    # genuine 0.995 lies between the two thresholds (held), 0.9995 above (matched)
    assert point.review.threshold <= 0.995 < point.upper.threshold <= 0.9995
    assert (point.fnir_missed, point.fnir_held) == (0.05, 0.90)
    assert (point.genuine_probes, point.impostor_pairs) == (100, 10_000)
    assert operating_point_problems(point, 0.05, 0.99) == []
    assert any("FNIR 0.0500" in p for p in operating_point_problems(point, 0.04, 0.99))
    far = operating_point_problems(point, 0.05, 0.5)
    assert any("--allow-far-threshold" in p for p in far)
    assert operating_point_problems(point, 0.05, 0.5, allow_far=True) == []
    few = IdentificationScores(genuine[:50], impostor, 50, 10)
    assert any("50 genuine probes" in p for p in operating_point_problems(
        operating_point(few, 0.01, 0.05, 4), 0.05, 0.99))  # fmt: skip


@pytest.mark.parametrize(
    ("fpir", "held", "gallery", "fragment"),
    [
        (0.0, 0.05, 1, "--fpir"),
        (1.0, 0.05, 1, "--fpir"),
        (math.nan, 0.05, 1, "--fpir"),
        (0.01, 1.0, 1, "--held-fpir"),
        (0.05, 0.01, 1, "below --fpir"),
        (0.01, 0.05, 0, "--gallery"),
        (0.01, 0.05, True, "--gallery"),
    ],
)
def test_bad_budgets_are_input_errors(
    fpir: float, held: float, gallery: int, fragment: str
) -> None:
    with pytest.raises(InputError, match=fragment):
        check_budgets(fpir, held, gallery)


def test_the_budget_warns_only_past_max_gallery() -> None:
    within = GalleryBudget("sface", 3, 3, 0.05, 1, 7)
    assert not within.over and within.warning() is None
    over = GalleryBudget("sface", 4, 3, 0.05, 1, 7)
    line = over.warning()
    assert over.over and line is not None
    assert "4 registered subjects exceed the 3" in line and "--fpir 0.05" in line
    assert GalleryBudget("sface", 10**6, None, None, None, None).warning() is None
