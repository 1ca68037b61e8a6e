"""``facemask annotate``: draw boxes, landmarks and scores, and write the aligned 112x112 crops next to it."""
from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from ..support.printable import printable
from .common import KEEP, UsageError, add_command, add_model_options, expand_inputs, open_preprocessor
from .output_paths import add_overwrite_option, check_output_file

DESCRIPTION = """Draw every detected face (box, score, five landmarks) into OUT, and write each face's aligned
112x112 crop as OUT_face<i>.png beside it (what the recognizer sees). Only the detector loads, not the recognizer.

With --mask, a synthetic surgical-style mask is first drawn on every face found (at its landmarks, variant
--mask-seed + i for face i), and OUT shows the masked photo annotated with what the detector finds on it; the crops
are the masked crops and OUT_masked.png is the clean masked photo (the probes of evaluate --mask-probes).

Exit code 1 when no face is found (OUT is still written, showing none), 2 on a usage error or when IMAGE cannot be
read."""


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
    add_overwrite_option(parser, "OUT, OUT_masked.png and the OUT_face<i>.png crops")
    parser.set_defaults(handler=run)


def _check_outputs(args: argparse.Namespace, paths: list[Path]) -> None:
    """Every file annotate is about to write (OUT, with --mask OUT_masked.png, then the crops): refused when it is
    the input image or, without --overwrite, an existing file."""
    named = 2 if args.mask else 1
    for index, path in enumerate(paths):
        what = "--out" if index == 0 else "--out's masked photo" if index < named else "--out's crop"
        check_output_file(path, what, reads=[args.image], overwrite=args.overwrite)


def run(args: argparse.Namespace) -> int:
    from ..tools.annotate import annotate_image, masked_path

    from ..tools.drawing import can_write_image
    from .common import check_extras
    from .exit_codes import negative_if

    check_extras(args)
    if args.mask_seed is not None and not args.mask:
        raise UsageError("--mask-seed chooses the mask variant: add --mask")
    expand_inputs([args.image])
    if not can_write_image(args.out):
        raise UsageError(f"--out {args.out!r} needs an image suffix such as .png or .jpg "
                         f"(got {Path(args.out).suffix or 'none'!r})")
    check_paths = functools.partial(_check_outputs, args)
    check_paths([Path(args.out), *([masked_path(Path(args.out))] if args.mask else [])])  # the crops: once found
    preprocessor = open_preprocessor(args, max_faces=KEEP if args.largest else None)
    max_faces = preprocessor.settings.max_faces if args.largest else None
    try:
        result = annotate_image(preprocessor, args.image, args.out, max_faces=max_faces, mask=args.mask,
                                mask_seed=args.mask_seed or 0, check_paths=check_paths)
    except OSError as exc:  # unwritable folder, unsupported suffix
        raise UsageError(str(exc)) from None
    if args.mask:
        print(f"{printable(args.image)}: {result.masks} face(s) masked (seed {args.mask_seed or 0}), "
              f"{len(result.crops)} face(s) found on the masked photo -> {printable(result.image)}")
        print(f"  masked photo: {printable(result.masked_image)}")
    else:
        print(f"{printable(args.image)}: {len(result.crops)} face(s) -> {printable(result.image)}")
    for path, score in zip(result.crops, result.scores):
        print(f"  {printable(path)} (score {score:.3f})")
    return negative_if(not result.crops)
