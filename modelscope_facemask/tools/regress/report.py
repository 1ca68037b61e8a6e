"""The human-readable report ``facemask regress check`` prints: the reference, the tolerances, a table of the worst
value per image and field, and the outcome with what failed or moved."""
from __future__ import annotations

from .comparison import CheckReport
from .reference_file import Reference

_COLUMNS = (("embedding", "1-cos"), ("recognizer", "1-cos recog"), ("landmarks", "landmarks px"),
            ("boxes", "boxes px"), ("scores", "scores"))


def _num(value: float) -> str:
    return "0" if value == 0 else f"{value:.2g}"


def format_report(report: CheckReport, reference: Reference) -> str:
    """The human-readable report ``facemask regress check`` prints."""
    meta, tol = reference.metadata, report.tolerances
    versions = meta.get("versions", {})
    lines = [f"reference {report.reference}: {len(reference.images)} images, {int(reference.face_counts.sum())} faces; "
             f"made {meta.get('created', '?')} on {meta.get('device')} ({meta.get('precision')}) with "
             f"modelscope-facemask {versions.get('modelscope-facemask')}, torch {versions.get('torch')}",
             f"tolerances ({report.preset}): end-to-end 1-cos <= {1 - tol.min_cos:.3g}, recognizer 1-cos <= "
             f"{1 - tol.min_cos_recognizer:.3g}, landmarks <= {tol.max_landmark_px:g} px, boxes <= "
             f"{tol.max_box_px:g} px, scores <= {tol.max_score_diff:g}"]
    lines += [f"warning: {w}" for w in report.warnings] + [f"note: {n}" for n in report.notes]
    from ...support.printable import printable

    width = max([len("image")] + [len(printable(r.image)) for r in report.images])
    header = f"{'image':<{width}}  faces  " + "  ".join(f"{title:>12}" for _, title in _COLUMNS)
    lines += ["", header]
    for r in report.images:
        bad = {f["field"] for f in r.failures}
        texts = ["non-finite" if key in r.non_finite else _num(r.worst.get(key, 0.0)) for key, _ in _COLUMNS]
        cells = [f"{text + ('!' if key in bad else ''):>12}" for text, (key, _) in zip(texts, _COLUMNS)]
        faces = f"{r.faces_now}/{r.faces_reference}" + ("!" if {"faces", "image"} & bad else "")
        lines.append(f"{printable(r.image):<{width}}  {faces:<5}  " + "  ".join(cells))
    lines.append("")
    if report.status == "pass":
        lines.append(f"PASS: {len(report.images)} images, {int(reference.face_counts.sum())} faces within tolerance")
    elif report.status == "dependency-change":
        moved = sorted({f["image"] for f in report.moved})
        lines.append(f"DEPENDENCY CHANGE: {len(moved)} of {len(report.images)} images moved beyond the same-version "
                     f"limits, within what upgrades of {', '.join(report.dependency_changes)} were measured to move "
                     f"them (1-cos <= {1 - tol.min_cos_recognizer:.3g}); the weights and the contract are the "
                     "reference's:")
        lines += [f"  {printable(f['message'])}" for f in report.moved]
        lines.append("A weight change this small would look the same. Check with the reference's versions (pip "
                     "install -c constraints.txt), or after an intended upgrade refresh the lock and the reference "
                     "(README: 'Refreshing the lock and the reference').")
    else:
        failed = sorted({f["image"] for f in report.failures})
        lines.append(f"REGRESSION: {len(failed)} of {len(report.images)} images out of tolerance:")
        lines += [f"  {printable(f['message'])}" for f in report.failures]
    return "\n".join(lines)
