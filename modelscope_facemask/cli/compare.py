"""``facemask compare``: cosine similarity of the largest faces of two images, and a same/different decision."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ..support.printable import printable
from .common import (UsageError, add_command, add_model_options, expand_inputs, json_text, open_pipeline,
                     similarity_threshold, untrained_warning)

#: placeholder decision threshold: NOT calibrated for the FaceMask weights (ArcFace-trained IResNets typically
#: separate identities around cosine 0.3-0.5). Calibrate with `facemask evaluate` on your data, then --threshold.
DEFAULT_THRESHOLD = 0.4

DESCRIPTION = f"""Compare the largest face of image A with the largest face of image B.

Prints the cosine similarity of their embeddings and "same person" when it is >= the threshold.
The default threshold {DEFAULT_THRESHOLD} is a PLACEHOLDER, not calibrated for these weights. Calibrate it on labelled
pairs from your own data:  facemask evaluate --pairs PAIRS.csv --model M   (columns image_a,image_b,same);
it prints the threshold for the false-accept rate you accept (TAR @ FAR lines) and the EER threshold.
Exit code 1 when no face is found in A or B (no decision; "different people" is exit 0), 2 on a usage error or
when A or B cannot be read."""


def register(commands: Any) -> None:
    from .json_option import add_json_options
    from .output_paths import add_overwrite_option

    parser = add_command(commands, "compare", help="compare the faces of two images", description=DESCRIPTION)
    parser.add_argument("image_a", metavar="A", help="image file or http(s) URL")
    parser.add_argument("image_b", metavar="B", help="image file or http(s) URL")
    add_model_options(parser)
    parser.add_argument("--threshold", type=similarity_threshold, default=None,
                        help=f"decision threshold on the cosine similarity, in [-1, 1] (default {DEFAULT_THRESHOLD}: "
                             "an uncalibrated placeholder, see above)")
    add_json_options(parser, "the similarity and the decision (also when no face is found: exit 1)")
    add_overwrite_option(parser, "an existing --json-out file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .common import check_extras
    from .exit_codes import SUCCESS
    from .json_option import check_json_out

    check_extras(args)
    expand_inputs([args.image_a, args.image_b])  # existence check before the model loads
    check_json_out(args, reads=[args.image_a, args.image_b])
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    pipeline = open_pipeline(args, max_faces=1)
    untrained_warning(pipeline)
    out_a, out_b = pipeline.run_batch([args.image_a, args.image_b], max_faces=1)
    for name, out in ((args.image_a, out_a), (args.image_b, out_b)):
        if "error" in out:
            raise UsageError(out["error"])
    missing = [name for name, out in ((args.image_a, out_a), (args.image_b, out_b)) if not len(out["scores"])]
    if missing:
        problem = f"no face found in {' and '.join(map(printable, missing))}: nothing to compare"
        return _negative(args, out_a, out_b, threshold, problem, stdout=True)
    similarity = float(np.dot(out_a["img_embedding"][0].astype(np.float64), out_b["img_embedding"][0]))
    if not np.isfinite(similarity):  # never decide on a NaN: it would read as "different people"
        problem = f"the similarity is {similarity} (non-finite embedding); no decision"
        return _negative(args, out_a, out_b, threshold, problem, stdout=False)
    same = similarity >= threshold
    _emit(args, out_a, out_b, threshold, similarity=similarity, same=same)
    if args.json:
        return SUCCESS
    print(f"A: {printable(args.image_a)} (face score {out_a['scores'][0]:.3f})")
    print(f"B: {printable(args.image_b)} (face score {out_b['scores'][0]:.3f})")
    relation = ">=" if same else "<"
    print(f"cosine similarity {similarity:.4f} {relation} threshold {threshold:.4f}: "
          f"{'same person' if same else 'different people'}")
    if args.threshold is None:
        print(f"note: the default threshold {DEFAULT_THRESHOLD} is an uncalibrated placeholder; calibrate it on your "
              "own labelled pairs with `facemask evaluate --pairs PAIRS.csv` and pass --threshold")
    return SUCCESS


def _emit(args: argparse.Namespace, out_a: dict[str, Any], out_b: dict[str, Any], threshold: float, *,
          similarity: float | None, same: bool | None, error: str | None = None) -> None:
    """The JSON document, on stdout (--json) and into --json-out; also for a negative result (then with "error")."""
    from .json_option import emit_json

    def score(out: dict[str, Any]) -> float | None:
        return float(out["scores"][0]) if len(out["scores"]) else None

    document = {"image_a": args.image_a, "image_b": args.image_b, "similarity": similarity,
                "threshold": threshold, "threshold_calibrated": args.threshold is not None,
                "same_person": same, "score_a": score(out_a), "score_b": score(out_b)}
    if error is not None:
        document["error"] = error
    emit_json(args, document, indent=None)


def _negative(args: argparse.Namespace, out_a: dict[str, Any], out_b: dict[str, Any], threshold: float,
              problem: str, *, stdout: bool) -> int:
    """No decision (no face, non-finite similarity): said once (the JSON's "error", else a line), exit 1."""
    from .exit_codes import NEGATIVE_RESULT

    _emit(args, out_a, out_b, threshold, similarity=None, same=None, error=problem)
    if not args.json:
        print(problem if stdout else f"facemask compare: error: {problem}", file=sys.stdout if stdout else sys.stderr)
    return NEGATIVE_RESULT
