"""Verification metrics behind `facemask evaluate`, against brute-force definitions and hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from modelscope_facemask.tools.evaluate import (
    PairsFileError,
    evaluate_similarities,
    read_pairs,
    roc_auc,
    roc_curve,
    tar_at_far,
)


def _random_scores(genuine: int, impostor: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(0.6, 0.15, genuine), rng.normal(0.2, 0.15, impostor)].round(2)  # rounding makes ties
    return scores, np.r_[np.ones(genuine, bool), np.zeros(impostor, bool)]


def test_auc_equals_the_mann_whitney_statistic():
    scores, labels = _random_scores(40, 300)
    gen, imp = scores[labels], scores[~labels]
    brute = (np.sum(gen[:, None] > imp[None, :]) + 0.5 * np.sum(gen[:, None] == imp[None, :])) / (len(gen) * len(imp))
    assert roc_auc(*roc_curve(scores, labels)[:2]) == pytest.approx(brute, abs=1e-12)


def test_tar_at_far_equals_brute_force_over_all_thresholds():
    scores, labels = _random_scores(50, 1000, seed=1)
    gen, imp = scores[labels], scores[~labels]
    far, tar, thresholds = roc_curve(scores, labels)
    for target in (1e-2, 1e-3):
        best_tar, best_t = 0.0, None
        for t in np.unique(scores):
            if np.mean(imp >= t) <= target and np.mean(gen >= t) > best_tar:
                best_tar, best_t = np.mean(gen >= t), t
        point = tar_at_far(far, tar, thresholds, target, len(imp))
        assert point.tar == pytest.approx(best_tar) and point.threshold == pytest.approx(best_t)
        assert point.far <= target
        assert np.mean(gen >= point.threshold) == pytest.approx(point.tar)


def test_hand_computed_case():
    # genuine {1, 3}, impostor {2, 4}: at threshold 3 one of each is accepted -> FAR = FRR = 0.5; AUC = 1/4
    result = evaluate_similarities([1, 3, 2, 4], [True, True, False, False], far_targets=(0.5,))
    assert result.roc_auc == pytest.approx(0.25)
    assert (result.eer, result.eer_threshold) == (pytest.approx(0.5), pytest.approx(3.0))
    (point,) = result.operating_points
    assert (point.tar, point.threshold, point.far) == (0.5, 3.0, 0.5)


def test_separable_scores():
    result = evaluate_similarities([0.9, 0.8, 0.3, 0.2, 0.1], [True, True, False, False, False], far_targets=(0.34,))
    assert result.roc_auc == 1.0 and result.eer == 0.0
    assert 0.3 < result.eer_threshold <= 0.8
    assert result.operating_points[0].tar == 1.0


def test_far_targets_need_enough_impostor_pairs():
    result = evaluate_similarities([0.9, 0.1, 0.2], [True, False, False])
    assert [p.tar for p in result.operating_points] == [None, None, None]
    assert result.operating_points[0].note == "needs at least 100 different-person pairs, have 2"


def test_roc_needs_both_labels():
    with pytest.raises(ValueError, match="need both"):
        roc_curve([0.1, 0.2], [True, True])


def test_read_pairs(tmp_path):
    (tmp_path / "sub").mkdir()
    csv = tmp_path / "sub" / "pairs.csv"
    csv.write_text("Image_A, image_b ,same\nx.jpg,/abs/y.jpg,Yes\nhttp://h/z.jpg,w.jpg,0\n")
    pairs = read_pairs(csv)
    assert [(p.image_a, p.image_b, p.same) for p in pairs] == [
        (str(tmp_path / "sub" / "x.jpg"), "/abs/y.jpg", True), ("http://h/z.jpg", str(tmp_path / "sub" / "w.jpg"), False)]
    csv.write_text("image_a,image_b,same\nx.jpg,y.jpg,maybe\n")
    with pytest.raises(PairsFileError, match=r"pairs.csv:2: 'same' must be 1/0"):
        read_pairs(csv)
    csv.write_text("image_a,image_b,same\n")
    with pytest.raises(PairsFileError, match="no pairs"):
        read_pairs(csv)



@pytest.mark.parametrize("content", [np.random.default_rng(3).bytes(2048), b"\xff\xfeimage_a,image_b,same\n"],
                         ids=["binary", "UTF-16 BOM"])
def test_read_pairs_refuses_files_that_are_not_utf8_csv(tmp_path, content):
    csv = tmp_path / "pairs.csv"
    csv.write_bytes(content)
    with pytest.raises(PairsFileError, match=f"'{csv}' is not a UTF-8 CSV text file .*UnicodeDecodeError"):
        read_pairs(csv)
