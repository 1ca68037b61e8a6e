"""The tolerances of a check: the presets (same device, cross device, dependency change) and how one is chosen.

Defaults measured on this project's 2-core CPU with the small deterministic test model and the real mobilenet0.25
detector on the six portraits (``tests/regression/README.md`` has the numbers):

* same device type and precision as the reference (the CI case): fp32 CPU noise is 1-cos <= 7e-15 for the
  recognizer (batch vs single, 1-4 threads) and 1-cos 5.7e-8 end to end (the detector's landmarks move by 6e-5 px
  between 1 and 2 threads, which changes a few crop pixels); single-weight changes (one BatchNorm running_mean
  element +0.05, or one convolution scaled by 1.001, in any of 34 places) give recognizer 1-cos 2e-8 .. 1e-3, and
  detector changes move landmarks by 0.002 .. 1.1 px, or only boxes (0.04 px and more) or scores (2e-5 and more;
  score noise: 0). Hence 1-cos <= 1e-6 end to end, <= 1e-9 for the recognizer, 0.01 px, scores 1e-5: every
  one-weight change that alters any output on the reference images is caught (``tests/regression/sensitivity.py``).
* another device type or precision than the reference (e.g. a CPU reference checked on a GPU with TF32
  convolutions, or fp16): GPU fp16 vs fp32 embeddings of the full network differ by up to 1-cos 2e-7 (bf16: 1e-5),
  and the performance target is cosine >= 0.9999; hence cosine >= 0.9999 for both, 0.5 px, scores 1e-3. At these
  tolerances weight changes of the size above are *not* detectable: make the reference on the device that checks it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from .reference_file import Reference


@dataclass(frozen=True)
class Tolerances:
    """Limits of a passing check (cosines are lower bounds, the rest upper bounds)."""

    min_cos: float
    min_cos_recognizer: float
    max_landmark_px: float
    max_box_px: float
    max_score_diff: float


#: reference and check on the same device type and precision (see the module docstring for the measurements)
SAME_DEVICE = Tolerances(min_cos=0.999999, min_cos_recognizer=0.999999999, max_landmark_px=0.01, max_box_px=0.01,
                         max_score_diff=1e-5)
#: reference made on another device type or precision than the check runs on
CROSS_DEVICE = Tolerances(min_cos=0.9999, min_cos_recognizer=0.9999, max_landmark_px=0.5, max_box_px=0.5,
                          max_score_diff=1e-3)
#: libraries whose releases change the numbers of the default CPU path: image decoding (Pillow), the alignment
#: warp (OpenCV), the networks (torch) and the arithmetic around them (numpy)
NUMERIC_DEPENDENCIES = ("opencv", "pillow", "torch", "numpy")
#: same device type and precision, same weights and contract, but another release of a numeric dependency: what such
#: upgrades were measured to move (tests/regression/README.md, "Dependency upgrades"): OpenCV 5.0.0 -> 5.1.0 (the
#: warp rounds 1-5 of 37,632 crop values by one level) recognizer 1-cos <= 5.2e-7; OpenCV 4.10-4.14 against 5.0.0
#: <= 6.1e-5; torch 2.14.1+cu130 -> 2.13.0+cpu and Pillow 11.3 / 12.0 -> 13.0 changed nothing; every one of these
#: leave landmarks, boxes and scores bit-identical on the portraits. Hence 1-cos <= 1e-4 (the decade above the worst
#: measured); the landmark, box and score limits stay the same-device ones, since no measured upgrade moved them.
DEPENDENCY_CHANGE = Tolerances(min_cos=0.9999, min_cos_recognizer=0.9999, max_landmark_px=0.01, max_box_px=0.01,
                               max_score_diff=1e-5)


def choose_tolerances(reference: Reference, device: str, precision: str,
                      overrides: Mapping[str, float | None] | None = None) -> tuple[Tolerances, str]:
    """The preset for this reference/run pair (same or cross device), with explicit ``overrides`` applied."""
    same = (reference.metadata.get("device", "").split(":")[0] == device.split(":")[0]
            and reference.metadata.get("precision") == precision)
    preset, name = (SAME_DEVICE, "same-device") if same else (CROSS_DEVICE, "cross-device")
    given = {k: float(v) for k, v in (overrides or {}).items() if v is not None}
    return replace(preset, **given), name + (" with overrides" if given else "")


def dependency_changes(reference_metadata: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``"opencv 5.0.0 -> 5.1.0"`` for every :data:`NUMERIC_DEPENDENCIES` entry whose version differs from the one the
    reference recorded (a library the reference did not record is not counted)."""
    recorded = reference_metadata.get("versions", {})
    return [f"{name} {recorded[name]} -> {now['versions'].get(name)}" for name in NUMERIC_DEPENDENCIES
            if name in recorded and recorded[name] != now["versions"].get(name)]
