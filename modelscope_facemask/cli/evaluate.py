"""``facemask evaluate``: ROC AUC, EER and TAR at FAR 1e-2/1e-3/1e-4 on labelled pairs (1:1), or rank-1/rank-5
identification rates and TPIR at FPIR 1e-2/1e-3 of probes against a gallery (1:N) -- threshold calibration."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from ..support.printable import printable
from .common import (DEFAULT_MODEL, UsageError, add_command, add_model_options, expand_inputs, open_pipeline,
                     positive_int, run_images, untrained_warning, write_json)
from .output_paths import add_overwrite_option, check_distinct, check_not_an_input, check_output_file
from .gallery import add_search_options, apply_search_options, model_default

DESCRIPTION = """Evaluate face verification on labelled pairs and calibrate `facemask compare`'s threshold.

PAIRS.csv has a header and the columns image_a,image_b,same (same: 1/0, true/false or yes/no); relative paths
are relative to the CSV's folder. Each image's largest face is embedded once; the similarity of a pair is the
cosine of the two embeddings; "same person" means similarity >= threshold. Printed: ROC AUC, the equal error rate
with its threshold, and the true-accept rate at false-accept rates 1e-2, 1e-3 and 1e-4 with the threshold of each
(n/a when there are fewer than 1/FAR different-person pairs). Pairs with an unreadable image or no face are
skipped and counted. Pass a threshold you choose here to `facemask compare --threshold`.

1:N, `--gallery G --probes SRC` (SRC: an IDENTITY/*.jpg folder tree, a path,identity CSV or Parquet face rows):
each probe image's largest face is searched in gallery G. Probes of identities enrolled in G are mated, the others
non-mated. Printed, as NIST FRVT 1:N reports them: the rank-1 and rank-5 identification rates (mated probes whose
identity is among the first 1 or 5 candidates) and, open set, TPIR (mated probes whose rank-1 candidate is their
identity with a score >= T) at FPIR (non-mated probes whose rank-1 score is >= T) 1e-2 and 1e-3, with each
threshold T (n/a with fewer than 1/FPIR non-mated probes). A probe with no face counts as a miss (mated) and as no
false positive (non-mated). Pass a threshold you choose here to `facemask identify --threshold`.
--mask-probes (masked-face evaluation, the protocol of the model card's MFR-ALL column: masked probes against an
unmasked gallery): faces are detected on each unmasked probe photo, a synthetic surgical-like mask is drawn on the
photo at the largest face's five landmarks (seeded by the probe's name, so every run draws the same masks), and the
whole pipeline then runs on the masked photo; a face no longer detected once masked counts as a miss.

Exit code 0 when the metrics are computed: images without a face are counted in them, not failures; 2 on a usage
error (also when no pair or probe is usable)."""


def register(commands: Any) -> None:
    parser = add_command(commands, "evaluate", help="verification metrics and thresholds on labelled pairs",
                         description=DESCRIPTION)
    parser.add_argument("--pairs", metavar="PAIRS.csv", help="1:1: CSV with image_a,image_b,same")
    parser.add_argument("--gallery", metavar="G", help="1:N: gallery folder (`facemask gallery build`); needs --probes")
    parser.add_argument("--probes", metavar="SRC", help="1:N: labelled probe images (IDENTITY/*.jpg folder tree, "
                        "path,identity CSV, or Parquet face rows)")
    parser.add_argument("--mask-probes", action="store_true", help="1:N: draw a synthetic mask on every probe photo "
                        "first (masked probes against the unmasked gallery)")
    parser.add_argument("--aggregate", choices=("best", "mean"), default="best",
                        help="1:N per-identity score: best image (default) or mean template")
    add_search_options(parser)
    add_model_options(parser)
    model_default(parser, f"{DEFAULT_MODEL}; with --gallery, the gallery's model")
    parser.add_argument("--plot", metavar="ROC.png", help="also draw the ROC curve (needs matplotlib)")
    from .json_option import add_json_options

    add_json_options(parser, "the results", legacy_file=True,
                     out_note="; `facemask pack --evaluation FILE` puts them on the model card")
    add_overwrite_option(parser, "an existing --json-out or --plot file")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default 16)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.gallery is not None or args.probes is not None or args.mask_probes:
        return run_identification(args)
    if args.pairs is None:
        raise UsageError("give --pairs PAIRS.csv (1:1 verification) or --gallery G --probes SRC (1:N identification)")
    return run_pairs(args)


def run_pairs(args: argparse.Namespace) -> int:
    """1:1: embed the pairs' images, print ROC AUC, EER and TAR at each FAR; write --json and --plot."""
    from ..tools.evaluate import evaluate_similarities, plot_roc, roc_curve

    from .common import check_extras
    from .json_option import emit_json, say_written, text_stream

    check_extras(args)
    args.model = args.model or DEFAULT_MODEL
    _check_pairs_outputs(args)
    pairs, images = _read_pairs_images(args)
    pipeline = open_pipeline(args, max_faces=1)
    untrained_warning(pipeline)
    outputs = run_images(pipeline, images, max_faces=1, batch_size=args.batch_size, progress=not args.no_progress)
    usable, similarities, labels, skipped = _pair_similarities(pairs, images, outputs, quiet=args.json)
    result = evaluate_similarities(similarities, labels)
    emit_json(args, {"pairs_file": Path(args.pairs).name, "model": args.model, "device": str(pipeline.device_used),
                     "skipped_pairs": len(pairs) - len(usable),
                     "skipped_images": [{"image": image, "reason": why} for image, why in skipped.items()],
                     "evaluation": result.to_dict()})
    if not args.json:
        print(f"pairs: {len(usable)} used ({result.genuine_pairs} same, {result.impostor_pairs} different), "
              f"{len(pairs) - len(usable)} skipped; images: {len(images)}; model {printable(args.model)} on "
              f"{pipeline.device_used}")
        _print_verification(result)
    say_written(args, "results")
    if args.plot:
        far, tar, _ = roc_curve(similarities, labels)
        print(f"ROC curve -> {printable(plot_roc(far, tar, result, args.plot))}", file=text_stream(args))
    return 0


def _check_pairs_outputs(args: argparse.Namespace) -> None:
    """--plot (matplotlib installed, a file type it writes) and --json-out may be written, and are distinct files."""
    from ..tools.evaluate import plot_formats

    if args.plot:
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib, which is not installed: `pip install matplotlib` "
                             "(or leave --plot out; the metrics do not need it)")
        suffix = Path(args.plot).suffix.lower().lstrip(".")
        formats = plot_formats()
        if suffix not in formats:
            raise UsageError(f"--plot {args.plot!r}: the file name must end in one of "
                             f"{', '.join('.' + f for f in sorted(formats))} (e.g. ROC.png)")
        check_output_file(args.plot, "--plot", reads=[args.pairs], overwrite=args.overwrite)
    if args.json_out:
        check_output_file(args.json_out, "--json-out", reads=[args.pairs], overwrite=args.overwrite)
    check_distinct({"--plot": args.plot, "--json-out": args.json_out})


def _read_pairs_images(args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    """(the pairs of --pairs, their images sorted), checked: the outputs are none of the images."""
    from ..tools.evaluate import PairsFileError, read_pairs

    try:
        pairs = read_pairs(args.pairs)
    except PairsFileError as exc:
        raise UsageError(str(exc)) from None
    images = sorted({p.image_a for p in pairs} | {p.image_b for p in pairs})
    expand_inputs(images)
    for option, path in (("--plot", args.plot), ("--json-out", args.json_out)):
        if path:
            check_not_an_input(path, option, images)  # the pairs' images (also with --overwrite)
    return pairs, images


def _pair_similarities(pairs: list[Any], images: list[str], outputs: list[Any], *,
                       quiet: bool = False) -> tuple[list[Any], list[float], list[bool], dict[str, str]]:
    """(usable pairs, their cosine similarities, their same-person labels, image -> why skipped); the images without
    a usable face are printed as skipped (unless ``quiet``). A usage error when no pair is usable or the usable ones
    are all same or all different."""
    import numpy as np

    embedding = {img: out["img_embedding"][0] for img, out in zip(images, outputs)
                 if len(out["scores"]) and np.isfinite(out["img_embedding"][0]).all()}
    problems = {img: out.get("error", "no face" if not len(out["scores"]) else "non-finite embedding")
                for img, out in zip(images, outputs) if img not in embedding}
    usable = [p for p in pairs if p.image_a in embedding and p.image_b in embedding]
    for img, why in problems.items() if not quiet else ():
        print(f"skipped {printable(img)}: {printable(why)}")
    if not usable:
        raise UsageError("no pair has a face in both images")
    similarities = [float(np.dot(embedding[p.image_a].astype(np.float64), embedding[p.image_b])) for p in usable]
    labels = [p.same for p in usable]
    if all(labels) or not any(labels):
        raise UsageError(f"need both same-person and different-person pairs; the usable pairs are all "
                         f"{'same' if all(labels) else 'different'}")
    return usable, similarities, labels, problems


def _print_verification(result: Any) -> None:
    """ROC AUC, EER and TAR at each FAR target, with their thresholds."""
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


def _probe_embeddings(args: argparse.Namespace, gallery: Any) -> tuple[Any, list[str]]:
    """(embedded probes, identity of every probe problem), checked against the gallery's model."""
    from ..errors import EnrolmentSourceError
    from ..tools.gallery.enrolment_sources import LabelledImages, embed_images, identity_of_source, read_source
    from ..tools.gallery.face_gallery import GalleryModel

    try:
        found = read_source(args.probes)
    except EnrolmentSourceError as exc:
        raise UsageError(str(exc)) from None
    if not isinstance(found, LabelledImages):
        if args.mask_probes:
            raise UsageError(f"--mask-probes needs probe images (a folder tree or CSV), not Parquet face rows "
                             f"{args.probes!r}: masks are drawn on the photos before detection")
        gallery.check_model(GalleryModel.from_metadata(found.metadata))
        return found, [identity_of_source(source)[0] for source, _ in found.problems]
    args.model = args.model or gallery.model.model
    pipeline = open_pipeline(args, max_faces=1)
    untrained_warning(pipeline)
    gallery.check_model(GalleryModel.of_pipeline(pipeline, args.model))
    if args.mask_probes and not pipeline.preprocessor.settings.use_det:
        raise UsageError("--mask-probes needs face detection (landmarks), but this model's use_det is off")
    embedded = embed_images(pipeline, found.images, model=args.model, batch_size=args.batch_size,
                            progress=not args.no_progress, mask=args.mask_probes)
    identity = {image.source: image.identity for image in found.images}
    embedded.problems[:0] = found.problems  # images outside identity folders: no identity, not probes
    return embedded, [identity.get(source, "") for source, _ in embedded.problems]


def run_identification(args: argparse.Namespace) -> int:
    from ..tools.gallery.face_gallery import FaceGallery
    from ..tools.gallery.identification_metrics import RANKS, identification_metrics
    from .common import check_extras
    from .json_option import check_json_out, emit_json, say_written

    if args.pairs is not None:
        raise UsageError("--pairs (1:1) and --gallery/--probes (1:N) are separate evaluations: run them one at a time")
    if args.gallery is None or args.probes is None:
        raise UsageError("1:N evaluation needs both --gallery G and --probes SRC")
    if args.plot:
        raise UsageError("--plot draws the 1:1 ROC curve; it is not available with --gallery")
    check_extras(args, extras=[("gallery", "the face gallery")])
    check_json_out(args, reads=[args.probes], folders={args.gallery: "the gallery being read", **(
        {args.probes: "the probes"} if Path(args.probes).is_dir() else {})})
    gallery = FaceGallery.load(args.gallery)
    if len(gallery) == 0:
        raise UsageError(f"gallery {args.gallery!r} is empty: enrol images with `facemask gallery add`")
    apply_search_options(gallery, args)
    embedded, problem_identities = _probe_embeddings(args, gallery)
    searched = gallery.search(embedded.embeddings, top_k=max(RANKS), aggregate=args.aggregate)
    candidates = [[(c.identity, c.score) for c in found] for found in searched]
    probe_identities, problems = list(embedded.identities), []
    for (source, why), identity in zip(embedded.problems, problem_identities):
        problems.append({"probe": source, "reason": why, "counted": bool(identity)})
        if not args.json:
            print(f"probe {printable(source)}: {printable(why)}" + ("" if identity else " (not counted: no identity)"))
        if identity:
            candidates.append([])
            probe_identities.append(identity)
    if not probe_identities:
        raise UsageError(f"no usable probes in {args.probes!r}")
    result = identification_metrics(candidates, probe_identities, gallery.identities())
    enrolled_again = sum(gallery.enrolled_photos(embedded.sources))
    emit_json(args, {"gallery": str(args.gallery), "probes": str(args.probes), "model": gallery.model.model,
                     "mask_probes": bool(args.mask_probes), "aggregate": args.aggregate,
                     "gallery_images": len(gallery), "gallery_identities": len(gallery.identities()),
                     "probe_images_enrolled_in_gallery": enrolled_again, "probe_problems": problems,
                     "identification": result.to_dict()})
    if not args.json:
        _print_identification(args, gallery, result, len(probe_identities), enrolled_again)
    say_written(args, "results")
    return 0


def _print_identification(args: argparse.Namespace, gallery: Any, result: Any, probes: int,
                          enrolled_again: int) -> None:
    """The 1:N report: probes and gallery, rank-k rates, TPIR at each FPIR with its threshold."""
    masked = " (masked probes)" if args.mask_probes else ""
    print(f"probes{masked}: {probes} ({result.mated_probes} mated, {result.non_mated_probes} "
          f"non-mated; {result.failed_mated_probes + result.failed_non_mated_probes} without a usable face); "
          f"gallery: {len(gallery)} image(s) of {len(gallery.identities())} identities; model "
          f"{printable(gallery.model.model)}; "
          f"aggregate {args.aggregate}")
    if enrolled_again:
        print(f"note: {enrolled_again} probe image(s) are themselves enrolled in the gallery: they find themselves "
              "at rank 1; use probe images that are not enrolled")
    for rank, rate in result.rank_rates.items():
        print(f"rank-{rank} identification rate: " + ("n/a (no mated probes)" if rate is None else f"{rate:.4f}"))
    for point in result.open_set:
        if point.tpir is None:
            print(f"TPIR @ FPIR {point.fpir_target:g}: n/a ({point.note})")
        elif point.threshold is None:
            print(f"TPIR @ FPIR {point.fpir_target:g}: 0 ({point.note})")
        else:
            print(f"TPIR @ FPIR {point.fpir_target:g}: {point.tpir:.4f} at threshold {point.threshold:.4f} "
                  f"(FNIR {point.fnir:.4f}, measured FPIR {point.fpir:.2g})")
