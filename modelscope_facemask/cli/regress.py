"""``facemask regress create|check``: reference embeddings for CI (``modelscope_facemask.tools.regress``)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..support.printable import printable
from .common import KEEP, UsageError, add_command, add_model_options, image_files, max_faces_arg, open_pipeline
from .output_paths import add_overwrite_option, check_not_an_input, check_output_file

CHECK_EPILOG = """Default tolerances (reference and check on the same device type and precision; measured noise on a
2-core CPU: recognizer 1-cos <= 7e-15, end to end 1-cos 5.7e-8 from 6e-5 px landmark jitter between thread counts;
single-weight changes give 1-cos 2e-8 .. 1e-3, landmark shifts 0.002 .. 1.1 px, score changes from 2e-5):
  --min-cos 0.999999  --min-cos-recognizer 0.999999999  --max-landmark-px 0.01  --max-box-px 0.01
  --max-score-diff 1e-5
When the reference was made on another device type or precision (CPU vs CUDA/TF32, fp16), the defaults become
  cosines 0.9999 (GPU fp16 vs fp32 differs by up to 1-cos 2e-7, bf16 1e-5), 0.5 px, scores 1e-3
and such small weight changes are no longer detectable. Explicit options override either preset.
NaN or Inf in the reference or in the current output is a regression whatever the tolerances (the NaN scores and
landmarks of a use_det=False reference match when both sides are NaN).
When the weights and contract are the reference's but OpenCV, Pillow, torch or numpy has another version, outputs
beyond those limits are judged against what such upgrades were measured to move (1-cos <= 1e-4; landmarks, boxes and
scores as above): within them the check reports a dependency change (exit 3), not a regression.
Exit codes: 0 within tolerance, 1 regression (per-image report), 2 usage error (missing or malformed reference,
missing or different images), 3 dependency change (outputs moved as a dependency upgrade moves them; refresh the
reference after an intended upgrade, see the README)."""


def register(commands: Any) -> None:
    parser = commands.add_parser("regress", help="create or check reference embeddings",
                                 description="Reference-embedding regression: `create` records what the pipeline "
                                             "produces for a folder of images, `check` verifies it still does.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = add_command(actions, "create", help="record a reference .npz")
    add_model_options(create)
    create.add_argument("--images", required=True, metavar="DIR", help="folder of images (recursive; names are "
                        "paths relative to it)")
    create.add_argument("--out", required=True, metavar="REF.npz", help="reference file to write")
    create.add_argument("--max-faces", type=max_faces_arg, default=KEEP, metavar="N|all",
                        help="faces per image (default: the model's configuration)")
    create.add_argument("--force", "--overwrite", dest="force", action="store_true",
                        help="overwrite an existing reference file (see tests/regression/README.md for when that is "
                             "legitimate; never one of the images)")
    create.set_defaults(handler=run_create)

    check = add_command(actions, "check", help="compare the pipeline with a reference .npz", epilog=CHECK_EPILOG)
    add_model_options(check)
    check.add_argument("--reference", required=True, metavar="REF.npz", help="reference file")
    check.add_argument("--images", metavar="DIR", help="folder holding the reference's images, matched by name and "
                       "sha256 (default: the folder recorded at creation)")
    check.add_argument("--min-cos", type=float, help="end-to-end embedding cosine lower bound")
    check.add_argument("--min-cos-recognizer", type=float,
                       help="cosine lower bound for the recognizer on the reference's landmarks")
    check.add_argument("--max-landmark-px", type=float, help="landmark difference upper bound (pixels)")
    check.add_argument("--max-box-px", type=float, help="box coordinate difference upper bound (pixels)")
    check.add_argument("--max-score-diff", type=float, help="detector score difference upper bound")
    from .json_option import add_json_options

    add_json_options(check, "the full report (every image and field; the exit code as without it)", legacy_file=True)
    add_overwrite_option(check, "an existing --json-out file")
    check.set_defaults(handler=run_check)


def run_create(args: argparse.Namespace) -> int:
    from ..tools.regress import command_line, create_reference, save_reference
    from .common import check_extras

    check_extras(args)
    out = check_output_file(args.out, "--out", overwrite=args.force, overwrite_option="--force")
    folder = Path(args.images)
    if not folder.is_dir():
        raise UsageError(f"--images {args.images!r} is not a folder")
    images = {p.relative_to(folder).as_posix(): p for p in image_files(folder)}
    if not images:
        raise UsageError(f"no images in {args.images!r}")
    check_not_an_input(out, "--out", images.values())  # also with --force
    pipeline = open_pipeline(args, max_faces=args.max_faces)
    max_faces = pipeline.preprocessor.settings.max_faces if args.max_faces is KEEP else args.max_faces
    reference = create_reference(pipeline, images, max_faces=max_faces, model=args.model,
                                 images_dir=str(folder.resolve()), command=command_line())
    save_reference(reference, out)
    meta = reference.metadata
    print(f"wrote {printable(out)}: {len(reference.images)} images, {int(reference.face_counts.sum())} faces, on "
          f"{meta['device']} ({meta['precision']}); contract sha256 {meta['contract_sha256'][:16]}; weights " +
          ", ".join(f"{role} {w['sha256'][:16]}" for role, w in meta["weights"].items()))
    return 0


def run_check(args: argparse.Namespace) -> int:
    from ..tools.regress import check_reference, format_report, load_reference, locate_images
    from .common import check_extras
    from .exit_codes import DEPENDENCY_CHANGE, NEGATIVE_RESULT, SUCCESS
    from .json_option import check_json_out, emit_json, say_written

    check_extras(args)
    check_json_out(args, reads=[args.reference])
    reference = load_reference(args.reference)
    folder = args.images or reference.metadata.get("images_dir")
    if not folder:
        raise UsageError("the reference records no images folder; pass --images DIR")
    images = locate_images(reference, folder)
    if args.json_out:
        check_not_an_input(args.json_out, "--json-out", images.values())
    pipeline = open_pipeline(args, max_faces=reference.metadata["contract"]["max_faces"])
    overrides = {"min_cos": args.min_cos, "min_cos_recognizer": args.min_cos_recognizer,
                 "max_landmark_px": args.max_landmark_px, "max_box_px": args.max_box_px,
                 "max_score_diff": args.max_score_diff}
    report = check_reference(pipeline, reference, images, reference_path=args.reference, overrides=overrides)
    if not args.json:
        print(format_report(report, reference))
    # strict JSON: the report never holds NaN/Inf (non-finite values are failures with "value": null)
    emit_json(args, report.to_dict())
    say_written(args, "report")
    return {"pass": SUCCESS, "regression": NEGATIVE_RESULT, "dependency-change": DEPENDENCY_CHANGE}[report.status]
