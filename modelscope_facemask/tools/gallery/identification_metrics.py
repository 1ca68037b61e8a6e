"""1:N identification metrics the way NIST FRVT 1:N reports them: rank-k rates and TPIR at fixed FPIR.

Input: for every probe, its candidate list — (identity, score) pairs, best first, as a gallery search returns them
(ties in score broken by identity name, ascending) — and the probe's true identity. A probe is **mated** when its
identity is enrolled in the gallery, **non-mated** otherwise. A probe whose search failed (no face, unreadable
image) has an empty candidate list: it is a miss when mated and never a false positive when non-mated (FRVT
counts failures to make a template this way).

Definitions (decision rule everywhere: a candidate is returned when ``score >= T``):

* **rank-k identification rate** (closed set, mated probes only): the fraction of mated probes whose mate is among
  the first k candidates, whatever its score (the cumulative match characteristic at k).
* **FPIR(T)**, false-positive identification rate: the fraction of non-mated probes whose rank-1 candidate has a
  score >= T.
* **FNIR(T)**, false-negative identification rate: the fraction of mated probes whose rank-1 candidate is not the
  mate, or is the mate with a score < T. **TPIR(T) = 1 - FNIR(T)**.
* **TPIR at FPIR f**: the threshold T is the smallest observed rank-1 score with FPIR(T) <= f (the one that gives
  the highest TPIR within the FPIR budget); reported with T and the measured FPIR. It needs at least ceil(1/f)
  non-mated probes, else it is n/a.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Collection, Sequence

if TYPE_CHECKING:  # numpy is imported where it computes: `facemask identify --help` imports this module
    import numpy as np

#: ranks ``facemask evaluate --gallery`` reports the identification rate at
RANKS = (1, 5)
#: false-positive identification rates ``facemask evaluate --gallery`` reports TPIR at
FPIR_TARGETS = (1e-2, 1e-3)

Candidates = Sequence[tuple[str, float]]


@dataclass(frozen=True)
class OpenSetPoint:
    """TPIR/FNIR at an FPIR target; ``tpir``, ``fnir``, ``threshold`` and ``fpir`` are None when there are too few
    non-mated probes (``note`` says how many are needed); ``threshold`` None with ``tpir`` 0 when no threshold
    stays within the target."""

    fpir_target: float
    tpir: float | None
    fnir: float | None
    threshold: float | None
    fpir: float | None
    note: str = ""


@dataclass(frozen=True)
class IdentificationEvaluation:
    """Everything ``facemask evaluate --gallery`` reports (JSON-serialisable through :meth:`to_dict`)."""

    mated_probes: int
    non_mated_probes: int
    failed_mated_probes: int
    failed_non_mated_probes: int
    rank_rates: dict[int, float | None]
    open_set: tuple[OpenSetPoint, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rank_rates"] = {str(k): v for k, v in self.rank_rates.items()}
        return data


def ranked_candidates(scores: np.ndarray, identities: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The first ``k`` (identity, score) of one probe's per-identity scores: score descending, ties by identity."""
    order = sorted(range(len(identities)), key=lambda j: (-float(scores[j]), identities[j]))
    return [(identities[j], float(scores[j])) for j in order[:k]]


def mate_rank(candidates: Candidates, identity: str) -> int | None:
    """1-based position of ``identity`` in ``candidates``; None when it is not there."""
    for position, (name, _) in enumerate(candidates, start=1):
        if name == identity:
            return position
    return None


def rank_rate(ranks: Sequence[int | None], k: int) -> float | None:
    """Fraction of mated probes whose mate is at rank <= ``k`` (None: not in the list); None for no probes."""
    if not ranks:
        return None
    return sum(r is not None and r <= k for r in ranks) / len(ranks)


def tpir_at_fpir(mated_hits: np.ndarray, mated_total: int, non_mated_top: np.ndarray, non_mated_total: int,
                 target: float) -> OpenSetPoint:
    """TPIR at FPIR ``target``.

    ``mated_hits``: the rank-1 scores of the mated probes whose rank-1 candidate is the mate (the others never count
    as true positives); ``mated_total`` counts every mated probe. ``non_mated_top``: the rank-1 scores of the
    non-mated probes that returned a candidate; ``non_mated_total`` counts every non-mated probe.
    """
    import numpy as np

    needed = math.ceil(1.0 / target - 1e-9)
    if non_mated_total < needed:
        return OpenSetPoint(target, None, None, None, None,
                            f"needs at least {needed} non-mated probes, have {non_mated_total}")
    if mated_total == 0:
        return OpenSetPoint(target, None, None, None, None, "no mated probes")
    hits = np.sort(np.asarray(mated_hits, np.float64))
    impostors = np.sort(np.asarray(non_mated_top, np.float64))
    thresholds = np.unique(np.r_[hits, impostors])  # ascending
    false_positives = len(impostors) - np.searchsorted(impostors, thresholds, side="left")  # count of >= T
    allowed = np.flatnonzero(false_positives / non_mated_total <= target)
    if not len(allowed):
        return OpenSetPoint(target, 0.0, 1.0, None, 0.0, "no threshold keeps FPIR within the target")
    threshold = thresholds[allowed[0]]  # the smallest allowed: FPIR is non-increasing in T
    tpir = (len(hits) - np.searchsorted(hits, threshold, side="left")) / mated_total
    fpir = false_positives[allowed[0]] / non_mated_total
    return OpenSetPoint(target, float(tpir), float(1.0 - tpir), float(threshold), float(fpir))


def identification_metrics(candidates: Sequence[Candidates], probe_identities: Sequence[str],
                           gallery_identities: Collection[str], *, ranks: Sequence[int] = RANKS,
                           fpir_targets: Sequence[float] = FPIR_TARGETS) -> IdentificationEvaluation:
    """Rank-k identification rates and TPIR at each FPIR target (definitions in the module docstring).

    ``candidates[i]`` is probe i's candidate list (best first; empty when its search failed); search with at least
    ``max(ranks)`` candidates per probe, or the rank rates are lower bounds.
    """
    import numpy as np

    if len(candidates) != len(probe_identities):
        raise ValueError(f"{len(candidates)} candidate lists for {len(probe_identities)} probes")
    enrolled = set(gallery_identities)
    mated_ranks: list[int | None] = []
    mated_hits: list[float] = []
    non_mated_top: list[float] = []
    failed_mated = failed_non_mated = non_mated = 0
    for found, identity in zip(candidates, probe_identities):
        found = list(found)
        if identity in enrolled:
            mated_ranks.append(mate_rank(found, identity))
            failed_mated += not found
            if found and found[0][0] == identity:
                mated_hits.append(float(found[0][1]))
        else:
            non_mated += 1
            failed_non_mated += not found
            if found:
                non_mated_top.append(float(found[0][1]))
    return IdentificationEvaluation(
        mated_probes=len(mated_ranks), non_mated_probes=non_mated, failed_mated_probes=failed_mated,
        failed_non_mated_probes=failed_non_mated, rank_rates={k: rank_rate(mated_ranks, k) for k in ranks},
        open_set=tuple(tpir_at_fpir(np.asarray(mated_hits), len(mated_ranks), np.asarray(non_mated_top), non_mated, f)
                       for f in fpir_targets))
