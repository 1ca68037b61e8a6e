"""Verification metrics from labelled image pairs: ROC AUC, equal error rate, TAR at fixed FAR, with thresholds.

This is how a user calibrates ``facemask compare``'s threshold on their own data: a pairs file (CSV with columns
``image_a, image_b, same``) -> cosine similarities -> the threshold that gives the false-accept rate they accept.
Decision rule everywhere: "same person" when ``similarity >= threshold``.
"""
from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: the false-accept rates ``facemask evaluate`` reports the true-accept rate at
FAR_TARGETS = (1e-2, 1e-3, 1e-4)
_TRUE = {"1", "true", "yes", "y", "same", "t"}
_FALSE = {"0", "false", "no", "n", "different", "f"}


class PairsFileError(ValueError):
    """A pairs CSV that cannot be used (missing columns, bad labels, no rows)."""


@dataclass(frozen=True)
class Pair:
    """One labelled pair; paths are resolved against the CSV's folder."""

    image_a: str
    image_b: str
    same: bool


@dataclass(frozen=True)
class OperatingPoint:
    """TAR at a FAR target: ``tar``/``threshold``/``far`` are None when there are too few impostor pairs."""

    far_target: float
    tar: float | None
    threshold: float | None
    far: float | None
    note: str = ""


@dataclass(frozen=True)
class Evaluation:
    """Everything ``facemask evaluate`` reports (JSON-serialisable through :meth:`to_dict`)."""

    genuine_pairs: int
    impostor_pairs: int
    roc_auc: float
    eer: float
    eer_threshold: float
    operating_points: tuple[OperatingPoint, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    """Read ``image_a,image_b,same`` rows (header required; ``same`` is 1/0, true/false, yes/no).

    Relative image paths are taken relative to the CSV's folder; http(s) URLs are kept as they are.
    """
    path = Path(path)
    base = path.parent
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = {c.strip().lower(): c for c in (reader.fieldnames or [])}
            missing = [c for c in ("image_a", "image_b", "same") if c not in columns]
            if missing:
                raise PairsFileError(f"{path}: missing column(s) {', '.join(missing)}; the header must be "
                                     "image_a,image_b,same")
            pairs = []
            for line, row in enumerate(reader, start=2):
                label = (row[columns["same"]] or "").strip().lower()
                if label not in _TRUE | _FALSE:
                    raise PairsFileError(f"{path}:{line}: 'same' must be 1/0 (or true/false, yes/no), got {label!r}")
                a, b = (_resolve(base, (row[columns[c]] or "").strip()) for c in ("image_a", "image_b"))
                if not a or not b:
                    raise PairsFileError(f"{path}:{line}: empty image path")
                pairs.append(Pair(a, b, label in _TRUE))
    except OSError as exc:
        raise PairsFileError(f"cannot read pairs file {str(path)!r}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:  # a binary file, NUL bytes, a broken quote
        raise PairsFileError(f"{str(path)!r} is not a UTF-8 CSV text file ({type(exc).__name__}: {exc}); the pairs "
                             "file needs the header image_a,image_b,same") from None
    if not pairs:
        raise PairsFileError(f"{path}: no pairs")
    return pairs


def _resolve(base: Path, value: str) -> str:
    if not value or value.startswith(("http://", "https://")) or os.path.isabs(value):
        return value
    return str(base / value)


def roc_curve(similarities: Sequence[float], same: Sequence[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, thresholds): one point per distinct similarity, thresholds descending, starting at (0, 0, +inf)."""
    scores = np.asarray(similarities, np.float64)
    labels = np.asarray(same, bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"similarities {scores.shape} and labels {labels.shape} must be matching 1-D arrays")
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"need both same-person and different-person pairs (have {positives} and {negatives})")
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # accept every score >= this one
    tar = np.r_[0.0, np.cumsum(labels)[last_of_group] / positives]
    far = np.r_[0.0, np.cumsum(~labels)[last_of_group] / negatives]
    return far, tar, np.r_[np.inf, scores[last_of_group]]


def roc_auc(far: np.ndarray, tar: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids; ties count one half, as the Mann-Whitney statistic)."""
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2.0))


def equal_error_rate(far: np.ndarray, tar: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """(EER, threshold) where FAR = FRR, linearly interpolated between the two ROC points around the crossing."""
    frr = 1.0 - tar
    k = int(np.flatnonzero(frr <= far)[0])  # exists: the last point has far = 1
    if k == 0 or frr[k] == far[k]:
        threshold = thresholds[k] if np.isfinite(thresholds[k]) else thresholds[k + 1]
        return float(far[k]), float(threshold)
    gap_before, gap_after = frr[k - 1] - far[k - 1], far[k] - frr[k]
    t = gap_before / (gap_before + gap_after)
    eer = far[k - 1] + t * (far[k] - far[k - 1])
    upper = thresholds[k - 1] if np.isfinite(thresholds[k - 1]) else thresholds[k]
    return float(eer), float(upper + t * (thresholds[k] - upper))


def tar_at_far(far: np.ndarray, tar: np.ndarray, thresholds: np.ndarray, target: float, impostors: int) -> OperatingPoint:
    """The highest TAR whose FAR does not exceed ``target``; None when ``impostors`` pairs cannot resolve ``target``."""
    needed = int(np.ceil(1.0 / target))
    if impostors < needed:
        return OperatingPoint(target, None, None, None,
                              f"needs at least {needed} different-person pairs, have {impostors}")
    k = int(np.flatnonzero(far <= target)[-1])
    if not np.isfinite(thresholds[k]):
        return OperatingPoint(target, 0.0, None, 0.0, "no threshold accepts a pair at this FAR")
    return OperatingPoint(target, float(tar[k]), float(thresholds[k]), float(far[k]))


def evaluate_similarities(similarities: Sequence[float], same: Sequence[bool],
                          far_targets: Sequence[float] = FAR_TARGETS) -> Evaluation:
    """ROC AUC, EER (+ threshold) and TAR at each FAR target for labelled similarities."""
    far, tar, thresholds = roc_curve(similarities, same)
    labels = np.asarray(same, bool)
    eer, eer_threshold = equal_error_rate(far, tar, thresholds)
    impostors = int((~labels).sum())
    return Evaluation(
        genuine_pairs=int(labels.sum()), impostor_pairs=impostors, roc_auc=roc_auc(far, tar), eer=eer,
        eer_threshold=eer_threshold,
        operating_points=tuple(tar_at_far(far, tar, thresholds, t, impostors) for t in far_targets),
    )


def plot_formats() -> set[str]:
    """File suffixes (without the dot) matplotlib can save a figure as; needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return {suffix.lower() for suffix in Figure().canvas.get_supported_filetypes()}


def plot_roc(far: np.ndarray, tar: np.ndarray, evaluation: Evaluation, path: str | os.PathLike) -> Path:
    """Write a ROC plot (log FAR axis) with the EER point, atomically; the format comes from the suffix of ``path``.
    Needs matplotlib (raises ImportError otherwise)."""
    from ..support.atomic_files import writing_file

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    floor = 1.0 / max(evaluation.impostor_pairs, 1) / 2
    ax.plot(np.maximum(far, floor), tar, drawstyle="steps-post", label=f"ROC (AUC {evaluation.roc_auc:.4f})")
    ax.plot([max(evaluation.eer, floor)], [1 - evaluation.eer], "o",
            label=f"EER {evaluation.eer:.4f} @ {evaluation.eer_threshold:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"{evaluation.genuine_pairs} same / {evaluation.impostor_pairs} different pairs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    try:
        with writing_file(path) as tmp:  # the temporary name keeps the suffix, which chooses the format
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return Path(path)
