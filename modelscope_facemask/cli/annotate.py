"""``facemask annotate``: draw boxes, landmarks and scores, and write the aligned 112x112 crops next to it."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import KEEP, UsageError, add_command, add_model_options, check_output_file, expand_inputs, open_preprocessor

DESCRIPTION = """Draw every detected face (box, score, five landmarks) into OUT, and write each face's aligned
112x112 crop as OUT_face<i>.png beside it (what the recognizer sees). Only the detector loads, not the recognizer.

With --mask, a synthetic surgical-style mask is first drawn on every face found (at its landmarks, variant
--mask-seed + i for face i), and OUT shows the masked photo annotated with what the detector finds on it; the crops
are the masked crops and OUT_masked.png is the clean masked photo (the probes of evaluate --mask-probes)."""


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def register(commands: Any) -> None:
    parser = add_command(commands, "annotate", help="draw detected faces and write aligned crops",
                         description=DESCRIPTION)
    parser.add_argument("image", metavar="IMAGE", help="image file or http(s) URL")
    parser.add_argument("--out", required=True, help="annotated image to write (e.g. OUT.png)")
    add_model_options(parser)
    parser.add_argument("--largest", action="store_true",
                        help="only the face(s) the model would choose (its max_faces; default: all faces)")
    parser.add_argument("--mask", action="store_true",
                        help="draw a synthetic mask on every face first and annotate the masked photo; also writes "
                             "OUT_masked.png")
    parser.add_argument("--mask-seed", type=non_negative_int, default=None, metavar="N",
                        help="mask variant (colour, shape, pleats) of the first face; face i uses N + i (default 0; "
                             "needs --mask)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..annotate import annotate_image

    from ..drawing import can_write_image

    if args.mask_seed is not None and not args.mask:
        raise UsageError("--mask-seed chooses the mask variant: add --mask")
    expand_inputs([args.image])
    if not can_write_image(args.out):
        raise UsageError(f"--out {args.out!r} needs an image suffix such as .png or .jpg "
                         f"(got {Path(args.out).suffix or 'none'!r})")
    check_output_file(args.out, "--out")
    preprocessor = open_preprocessor(args, max_faces=KEEP if args.largest else None)
    max_faces = preprocessor.settings.max_faces if args.largest else None
    try:
        result = annotate_image(preprocessor, args.image, args.out, max_faces=max_faces, mask=args.mask,
                                mask_seed=args.mask_seed or 0)
    except OSError as exc:  # unwritable folder, unsupported suffix
        raise UsageError(str(exc)) from None
    if args.mask:
        print(f"{args.image}: {result.masks} face(s) masked (seed {args.mask_seed or 0}), {len(result.crops)} "
              f"face(s) found on the masked photo -> {result.image}")
        print(f"  masked photo: {result.masked_image}")
    else:
        print(f"{args.image}: {len(result.crops)} face(s) -> {result.image}")
    for path, score in zip(result.crops, result.scores):
        print(f"  {path} (score {score:.3f})")
    return 0
