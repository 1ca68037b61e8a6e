"""1:N identification metrics against brute-force numpy computations on crafted probe-vs-identity score matrices."""
from __future__ import annotations

import numpy as np
import pytest

from modelscope_facemask.tools.gallery.identification_metrics import (
    identification_metrics,
    mate_rank,
    ranked_candidates,
    tpir_at_fpir,
)


def _crafted(seed: int, identities: int = 30, mated: int = 120, non_mated: int = 1200):
    """Scores (probes, identities) rounded to 2 decimals (ties), mates ~0.55, others ~0.15; plus labels."""
    rng = np.random.default_rng(seed)
    names = [f"id{j:03d}" for j in range(identities)]
    truth = rng.integers(0, identities, mated)
    scores = rng.normal(0.15, 0.12, (mated + non_mated, identities))
    scores[np.arange(mated), truth] = rng.normal(0.55, 0.18, mated)
    scores = scores.round(2)
    labels = [names[t] for t in truth] + [f"stranger{i}" for i in range(non_mated)]
    return scores, names, labels


def _brute_force(scores, names, labels, ranks, targets):
    """Independent definitions: ranks by counting, FPIR/TPIR by trying every observed threshold."""
    names_arr = np.array(names)
    mated = np.array([label in names for label in labels])
    rank_of_mate = []
    hit_score = []  # rank-1 score when rank 1 is the mate, else -inf (never a true positive)
    for row, label in zip(scores[mated], np.array(labels)[mated]):
        j = names.index(label)
        better = (row > row[j]) | ((row == row[j]) & (names_arr < label))
        rank_of_mate.append(1 + int(better.sum()))
        hit_score.append(row[j] if rank_of_mate[-1] == 1 else -np.inf)
    rank_of_mate, hit_score = np.array(rank_of_mate), np.array(hit_score)
    top_non_mated = scores[~mated].max(axis=1)
    rates = {k: float(np.mean(rank_of_mate <= k)) for k in ranks}
    points = {}
    for target in targets:
        best = None
        for t in np.unique(np.r_[scores[mated].max(axis=1), top_non_mated]):
            fpir = np.mean(top_non_mated >= t)
            tpir = np.mean(hit_score >= t)
            if fpir <= target and (best is None or tpir > best[0] or (tpir == best[0] and t < best[1])):
                best = (tpir, t, fpir)
        points[target] = best
    return rates, points


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_rates_and_tpir_at_fpir_equal_brute_force(seed):
    scores, names, labels = _crafted(seed)
    candidates = [ranked_candidates(row, names, 5) for row in scores]
    result = identification_metrics(candidates, labels, names, ranks=(1, 5), fpir_targets=(1e-2, 1e-3))
    rates, points = _brute_force(scores, names, labels, (1, 5), (1e-2, 1e-3))
    assert result.mated_probes == 120 and result.non_mated_probes == 1200
    assert result.rank_rates[1] == pytest.approx(rates[1]) and result.rank_rates[5] == pytest.approx(rates[5])
    assert 0 < rates[1] < rates[5] < 1  # the crafted scores make both rates non-trivial
    for point in result.open_set:
        tpir, threshold, fpir = points[point.fpir_target]
        assert point.tpir == pytest.approx(tpir) and point.fnir == pytest.approx(1 - tpir)
        assert point.threshold == pytest.approx(threshold) and point.fpir == pytest.approx(fpir)
        assert point.fpir <= point.fpir_target


def test_hand_computed_case():
    # gallery {a, b}; mated probes: A1 rank-1 a @0.9, A2 rank-1 b (mate a second), B1 rank-1 b @0.5;
    # non-mated: 0.6, 0.4 and 100 more at 0.1 -> FPIR 1e-2 allows 1 of 102: T = 0.5 (the smallest score above 0.4)
    candidates = [[("a", 0.9), ("b", 0.2)], [("b", 0.7), ("a", 0.6)], [("b", 0.5), ("a", 0.3)],
                  [("a", 0.6)], [("b", 0.4)]] + [[("a", 0.1)]] * 100
    labels = ["a", "a", "b"] + ["x"] * 102
    result = identification_metrics(candidates, labels, {"a", "b"}, ranks=(1, 2), fpir_targets=(1e-2,))
    assert result.rank_rates == {1: pytest.approx(2 / 3), 2: 1.0}
    (point,) = result.open_set
    assert (point.threshold, point.tpir, point.fpir) == (0.5, pytest.approx(2 / 3), pytest.approx(1 / 102))


def test_failed_probes_are_misses_and_never_false_positives():
    candidates = [[("a", 0.9)], [], [("a", 0.2)]] + [[]] * 100
    labels = ["a", "a", "x"] + ["y"] * 100
    result = identification_metrics(candidates, labels, ["a"], ranks=(1,), fpir_targets=(1e-2,))
    assert result.failed_mated_probes == 1 and result.failed_non_mated_probes == 100
    assert result.rank_rates[1] == 0.5
    (point,) = result.open_set  # one non-mated score (0.2) among 101: FPIR <= 1e-2 at T = 0.2 already
    assert point.threshold == pytest.approx(0.2) and point.tpir == 0.5 and point.fpir == pytest.approx(1 / 101)


def test_too_few_non_mated_probes_is_not_applicable():
    result = identification_metrics([[("a", 0.9)], [("a", 0.1)]], ["a", "x"], ["a"])
    assert [p.tpir for p in result.open_set] == [None, None]
    assert result.open_set[0].note == "needs at least 100 non-mated probes, have 1"
    assert result.to_dict()["rank_rates"] == {"1": 1.0, "5": 1.0}


def test_no_threshold_within_the_target():
    # every non-mated probe scores above every mate: only T above all scores keeps FPIR 0 -> TPIR 0
    point = tpir_at_fpir(np.array([0.3, 0.4]), 2, np.full(1000, 0.9), 1000, 1e-3)
    assert (point.tpir, point.fnir, point.threshold, point.fpir) == (0.0, 1.0, None, 0.0)
    assert point.note == "no threshold keeps FPIR within the target"


def test_mate_rank_and_tie_order():
    assert ranked_candidates(np.array([0.5, 0.7, 0.5]), ["c", "b", "a"], 3) == [("b", 0.7), ("a", 0.5), ("c", 0.5)]
    assert mate_rank([("b", 0.7), ("a", 0.5)], "a") == 2 and mate_rank([("b", 0.7)], "z") is None
