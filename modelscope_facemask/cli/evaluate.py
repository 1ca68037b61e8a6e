"""``facemask evaluate``: ROC AUC, EER and TAR at FAR 1e-2/1e-3/1e-4 on labelled pairs -- threshold calibration."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from .common import (UsageError, add_command, add_model_options, check_output_file, expand_inputs, open_pipeline,
                     positive_int, run_images, untrained_warning, write_json)

DESCRIPTION = """Evaluate face verification on labelled pairs and calibrate `facemask compare`'s threshold.

PAIRS.csv has a header and the columns image_a,image_b,same (same: 1/0, true/false or yes/no); relative paths
are relative to the CSV's folder. Each image's largest face is embedded once; the similarity of a pair is the
cosine of the two embeddings; "same person" means similarity >= threshold. Printed: ROC AUC, the equal error rate
with its threshold, and the true-accept rate at false-accept rates 1e-2, 1e-3 and 1e-4 with the threshold of each
(n/a when there are fewer than 1/FAR different-person pairs). Pairs with an unreadable image or no face are
skipped and counted. Pass a threshold you choose here to `facemask compare --threshold`."""


def register(commands: Any) -> None:
    parser = add_command(commands, "evaluate", help="verification metrics and thresholds on labelled pairs",
                         description=DESCRIPTION)
    parser.add_argument("--pairs", required=True, metavar="PAIRS.csv", help="CSV with image_a,image_b,same")
    add_model_options(parser)
    parser.add_argument("--plot", metavar="ROC.png", help="also draw the ROC curve (needs matplotlib)")
    parser.add_argument("--json", metavar="RESULT.json", help="write the results as JSON (`facemask pack "
                        "--evaluation` puts them on the model card)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default 16)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluate import PairsFileError, evaluate_similarities, plot_formats, plot_roc, read_pairs, roc_curve

    if args.plot:
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib, which is not installed: `pip install matplotlib` "
                             "(or leave --plot out; the metrics do not need it)")
        suffix = Path(args.plot).suffix.lower().lstrip(".")
        formats = plot_formats()
        if suffix not in formats:
            raise UsageError(f"--plot {args.plot!r}: the file name must end in one of "
                             f"{', '.join('.' + f for f in sorted(formats))} (e.g. ROC.png)")
        check_output_file(args.plot, "--plot")
    if args.json:
        check_output_file(args.json, "--json")
    try:
        pairs = read_pairs(args.pairs)
    except PairsFileError as exc:
        raise UsageError(str(exc)) from None
    images = sorted({p.image_a for p in pairs} | {p.image_b for p in pairs})
    expand_inputs(images)
    pipeline = open_pipeline(args, max_faces=1)
    untrained_warning(pipeline)
    outputs = run_images(pipeline, images, max_faces=1, batch_size=args.batch_size, progress=not args.no_progress)
    embedding = {img: out["img_embedding"][0] for img, out in zip(images, outputs)
                 if len(out["scores"]) and np.isfinite(out["img_embedding"][0]).all()}
    problems = {img: out.get("error", "no face" if not len(out["scores"]) else "non-finite embedding")
                for img, out in zip(images, outputs) if img not in embedding}
    usable = [p for p in pairs if p.image_a in embedding and p.image_b in embedding]
    for img, why in problems.items():
        print(f"skipped {img}: {why}")
    if not usable:
        raise UsageError("no pair has a face in both images")
    similarities = [float(np.dot(embedding[p.image_a].astype(np.float64), embedding[p.image_b])) for p in usable]
    labels = [p.same for p in usable]
    if all(labels) or not any(labels):
        raise UsageError(f"need both same-person and different-person pairs; the usable pairs are all "
                         f"{'same' if all(labels) else 'different'}")
    result = evaluate_similarities(similarities, labels)
    print(f"pairs: {len(usable)} used ({result.genuine_pairs} same, {result.impostor_pairs} different), "
          f"{len(pairs) - len(usable)} skipped; images: {len(images)}; model {args.model} on {pipeline.device_used}")
    print(f"ROC AUC: {result.roc_auc:.4f}")
    print(f"EER: {result.eer:.4f} at threshold {result.eer_threshold:.4f}")
    for point in result.operating_points:
        if point.tar is None:
            print(f"TAR @ FAR {point.far_target:g}: n/a ({point.note})")
        elif point.threshold is None:
            print(f"TAR @ FAR {point.far_target:g}: 0 ({point.note})")
        else:
            print(f"TAR @ FAR {point.far_target:g}: {point.tar:.4f} at threshold {point.threshold:.4f} "
                  f"(measured FAR {point.far:.2g})")
    if args.json:
        write_json(args.json, {"pairs_file": Path(args.pairs).name, "model": args.model,
                               "device": str(pipeline.device_used), "skipped_pairs": len(pairs) - len(usable),
                               "evaluation": result.to_dict()})
        print(f"results -> {args.json}")
    if args.plot:
        far, tar, _ = roc_curve(similarities, labels)
        print(f"ROC curve -> {plot_roc(far, tar, result, args.plot)}")
    return 0
