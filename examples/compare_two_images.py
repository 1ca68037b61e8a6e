"""Compare the largest face of two images with FaceMask: cosine similarity of the 512-d embeddings.

    python examples/compare_two_images.py IMG_A IMG_B [--model HUB_ID_OR_FOLDER] [--threshold T] [--device cpu]

Images: local paths or http(s) URLs. --model: hub id (default damo/cv_resnet_face-recognition_facemask) or a
local snapshot folder (no hub call). --threshold: print a same/different verdict; calibrate it on your own data
(the model card gives no threshold). Exit code 0, or 1 when an image has no face, 2 when the hub is unreachable.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image_a", metavar="IMG_A")
    parser.add_argument("image_b", metavar="IMG_B")
    parser.add_argument("--model", default="damo/cv_resnet_face-recognition_facemask",
                        help="hub id or local model folder (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=None, help="similarity at or above which: same person")
    parser.add_argument("--device", default="auto", help="'auto' (default: CUDA when available, else the CPU), 'cpu', "
                        "'cuda:N'")
    parser.add_argument("--hub-timeout", type=float, default=5.0, help="seconds to wait for the hub (default 5)")
    args = parser.parse_args(argv)

    from modelscope_facemask.tools.demo import UNTRAINED_BANNER, is_untrained_demo_model, offer_offline_demo
    from modelscope_facemask.tools.hub.probe import hub_problem

    problem = hub_problem(args.model, timeout=args.hub_timeout)
    if problem:
        print(problem.message, file=sys.stderr, flush=True)
        return offer_offline_demo() if problem.hub_unreachable else 1

    import modelscope_facemask  # noqa: F401  (registers the FaceMask plugin with ModelScope)
    import numpy as np
    from modelscope.outputs import OutputKeys
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    recognize = pipeline(Tasks.face_recognition, args.model, device=args.device)
    results = recognize([args.image_a, args.image_b])  # one batched call; the largest face of each image
    for image, result in zip((args.image_a, args.image_b), results):
        if len(result[OutputKeys.IMG_EMBEDDING]) == 0:
            print(f"no face found in {image}" + (f" ({result['error']})" if result.get("error") else ""),
                  file=sys.stderr)
            return 1
        box = ", ".join(f"{v:.0f}" for v in result[OutputKeys.BOXES][0])
        print(f"{image}: face at [{box}], detector score {result[OutputKeys.SCORES][0]:.3f}")
    similarity = float(np.dot(results[0][OutputKeys.IMG_EMBEDDING][0], results[1][OutputKeys.IMG_EMBEDDING][0]))
    print(f"cosine similarity: {similarity:.4f}  (device: {recognize.device_name_used})")
    if is_untrained_demo_model(args.model):
        print(f"WARNING: {args.model} is the offline demo's model. {UNTRAINED_BANNER}.")
    if args.threshold is not None:
        verdict = "same person" if similarity >= args.threshold else "different people"
        print(f"{verdict} (threshold {args.threshold:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
