"""``facemask serve``'s routes against a real uvicorn server on 127.0.0.1 (in a thread, sharing the small
deterministic model with the test): served embeddings equal the in-process pipeline's on the real portraits, ``/call``
answers what ModelScope's own converters make of the pipeline's output, concurrent clients each get their own
answer from shared batches, and verify, identify and enrolment do what they say."""
from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import numpy as np
import pytest
import requests

pytest.importorskip("fastapi")
pytest.importorskip("faiss")

from modelscope_facemask.modelscope_adapters.pipeline import FaceMaskPipeline  # noqa: E402
from modelscope_facemask.tools.serve.settings import ServeSettings  # noqa: E402

from .serve_helpers import metric_samples, server_thread  # noqa: E402

PHOTOS = ("person_a_1", "person_a_2", "person_b_1", "person_b_2", "impostor_1", "impostor_2")
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def pipeline(small_model_dir) -> FaceMaskPipeline:
    return FaceMaskPipeline(str(small_model_dir), device="cpu")


@pytest.fixture(scope="module")
def photos(portraits) -> dict[str, bytes]:
    return {name: Path(portraits[name]).read_bytes() for name in PHOTOS}


@pytest.fixture(scope="module")
def expected(pipeline, portraits) -> dict[str, dict]:
    """In-process outputs, every face (max_faces=None), one image per call."""
    return {name: pipeline(str(portraits[name]), max_faces=None) for name in PHOTOS}


@pytest.fixture(scope="module")
def server(pipeline, small_model_dir, tmp_path_factory):
    from modelscope_facemask.tools.gallery.face_gallery import GalleryModel
    from modelscope_facemask.tools.serve.gallery_service import GalleryService

    folder = tmp_path_factory.mktemp("serve-gallery") / "G"
    gallery = GalleryService(folder, GalleryModel.of_pipeline(pipeline, str(small_model_dir)))
    settings = ServeSettings(model=str(small_model_dir), gallery=str(folder), max_wait_ms=50, threshold=0.5)
    with server_thread(settings, pipeline, gallery=gallery) as url:
        yield url, folder, gallery


def _close(served: list[float], reference: np.ndarray) -> bool:
    return float(np.abs(np.asarray(served, np.float64) - reference).max()) <= TOLERANCE


def test_embed_multipart_and_json_equal_the_in_process_pipeline(server, photos, expected):
    url = server[0]
    files = [("images", (f"{name}.jpg", photos[name], "image/jpeg")) for name in PHOTOS]
    by_upload = requests.post(f"{url}/v1/embed", files=files, timeout=120)
    by_json = requests.post(f"{url}/v1/embed", json={"images": [base64.b64encode(photos[n]).decode() for n in PHOTOS]},
                            timeout=120)
    for answer in (by_upload, by_json):
        assert answer.status_code == 200, answer.text
        images = answer.json()["images"]
        assert [image["index"] for image in images] == list(range(len(PHOTOS)))
        for name, image in zip(PHOTOS, images):
            reference = expected[name]
            assert image["error"] is None and len(image["faces"]) == len(reference["scores"]) >= 1
            for row, face in enumerate(image["faces"]):
                assert set(face) == {"box", "det_score", "landmarks", "embedding"}
                assert len(face["embedding"]) == 512 and _close(face["embedding"], reference["img_embedding"][row])
                assert _close(face["box"], reference["boxes"][row])
                assert _close(face["det_score"], reference["scores"][row])
                assert _close(np.ravel(face["landmarks"]), reference["keypoints"][row])


def test_embed_reports_a_bad_image_in_its_own_slot(server, photos, expected):
    url = server[0]
    answer = requests.post(f"{url}/v1/embed", files=[("images", ("junk.jpg", b"not an image", "image/jpeg")),
                                                     ("images", ("a.jpg", photos["person_a_1"], "image/jpeg"))],
                           timeout=60)
    assert answer.status_code == 200, answer.text
    bad, good = answer.json()["images"]
    assert bad["faces"] == [] and bad["error"]["code"] == "invalid_image" and "images[0]" in bad["error"]["message"]
    assert good["error"] is None and _close(good["faces"][0]["embedding"], expected["person_a_1"]["img_embedding"][0])


def test_call_answers_what_modelscope_makes_of_the_pipeline_output(server, pipeline, photos):
    """The request and answer of ModelScope's ``modelscope server``: its own converters run on the same body."""
    from modelscope.utils.input_output import (call_pipeline_with_json, get_task_input_examples, get_task_schemas,
                                               pipeline_output_to_service_base64_output)

    url = server[0]
    for name in ("person_a_2", "impostor_1"):
        body = {"input": {"image": base64.b64encode(photos[name]).decode()}, "parameters": {}}
        answer = requests.post(f"{url}/call", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        reference = pipeline_output_to_service_base64_output(
            "face-recognition", call_pipeline_with_json({"task_name": "face-recognition"}, pipeline, body))
        served = answer.json()
        assert set(served) == set(reference) == {"img_embedding", "scores", "boxes", "keypoints"}
        for key in reference:
            assert np.shape(served[key]) == np.shape(reference[key])
            assert np.abs(np.asarray(served[key], np.float64) - np.asarray(reference[key], np.float64)).max() \
                <= TOLERANCE
    body = {"input": {"image": base64.b64encode(photos["person_a_1"]).decode()}, "parameters": {"use_det": False}}
    whole = requests.post(f"{url}/call", json=body, timeout=60)  # no detector: NaN scores, sent as null
    assert whole.status_code == 200 and whole.json()["scores"] == [None] and len(whole.json()["img_embedding"]) == 1
    described = requests.get(f"{url}/describe", timeout=30).json()
    assert described == {"schema": {"task_name": "face-recognition", "schema": get_task_schemas("face-recognition")},
                         "sample": get_task_input_examples("face-recognition")}


def test_modelscope_health_answer(server):
    from http import HTTPStatus

    from modelscope.server.models.output import ApiResponse

    answer = requests.get(f"{server[0]}/health", timeout=30)
    assert answer.status_code == 200
    assert answer.json() == ApiResponse[dict](Data={}, Code=HTTPStatus.OK, Success=True).model_dump()


def test_call_never_opens_a_path_or_fetches_a_url(server, portraits):
    url = server[0]
    for text, code in ((str(portraits["person_a_1"]), "invalid_image"), ("/etc/passwd", "invalid_image"),
                       ("http://127.0.0.1:1/x.jpg", "urls_not_allowed")):
        answer = requests.post(f"{url}/call", json={"input": {"image": text}}, timeout=30)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == code
    answer = requests.post(f"{url}/call", json={"input": "x", "parameters": {"use_dett": True}}, timeout=30)
    assert answer.status_code == 422 and answer.json()["error"]["code"] in ("invalid_parameter", "invalid_image")


def test_concurrent_clients_share_batches_and_get_their_own_answers(server, photos, expected):
    url = server[0]
    before = _batches_over_one(url)
    names = [PHOTOS[i % len(PHOTOS)] for i in range(12)]
    answers: dict[int, requests.Response] = {}
    start = threading.Barrier(len(names))

    def client(slot: int) -> None:
        start.wait()
        answers[slot] = requests.post(f"{url}/v1/embed", files=[("images", ("p.jpg", photos[names[slot]]))],
                                      timeout=120)

    for _ in range(2):
        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(names))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        start.reset()
        for slot, name in enumerate(names):
            assert answers[slot].status_code == 200, answers[slot].text
            (image,) = answers[slot].json()["images"]
            reference = expected[name]["img_embedding"]
            assert len(image["faces"]) == len(reference)
            for row, face in enumerate(image["faces"]):
                assert _close(face["embedding"], reference[row]), (slot, name)
    assert _batches_over_one(url) > before  # some batches held images of several requests


def _batches_over_one(url: str) -> float:
    buckets = {s.labels["le"]: s.value for s in metric_samples(url, "facemask_batch_size_bucket")}
    return buckets["+Inf"] - buckets["1.0"]


def test_verify(server, pipeline, photos, portraits):
    url = server[0]
    a = pipeline(str(portraits["person_a_1"]), max_faces=1)["img_embedding"][0]
    b = pipeline(str(portraits["person_b_1"]), max_faces=1)["img_embedding"][0]
    answer = requests.post(f"{url}/v1/verify", files={"image_a": photos["person_a_1"], "image_b": photos["person_b_1"]},
                           data={"threshold": "0.25"}, timeout=60)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    similarity = float(np.dot(a.astype(np.float64), b))
    assert abs(document["similarity"] - similarity) <= TOLERANCE
    assert document["threshold"] == 0.25 and document["same"] is (similarity >= 0.25)
    assert set(document["faces"]) == {"a", "b"} and set(document["faces"]["a"]) == {"box", "det_score"}
    default = requests.post(f"{url}/v1/verify", json={"image_a": base64.b64encode(photos["person_a_1"]).decode(),
                                                      "image_b": base64.b64encode(photos["person_a_1"]).decode()},
                            timeout=60).json()
    assert default["threshold"] == 0.5 and default["same"] is True and default["similarity"] > 0.9999


def test_verify_without_a_face_names_the_image(server, photos):
    blank = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (200, 160), (200, 200, 200)).save(blank, format="PNG")
    answer = requests.post(f"{server[0]}/v1/verify", files={"image_a": photos["person_a_1"],
                                                            "image_b": blank.getvalue()}, timeout=60)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "no_face" and "image_b" in error["message"]


def test_enrol_identify_and_delete(server, pipeline, photos, portraits):
    from modelscope_facemask.tools.gallery.face_gallery import FaceGallery

    url, folder = server[:2]
    for identity, name in (("alice", "person_a_1"), ("bob", "person_b_1")):
        answer = requests.post(f"{url}/v1/gallery/identities", data={"identity": identity},
                               files=[("images", (f"{name}.jpg", photos[name]))], timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["identity"] == identity and answer.json()["enrolled"] == 1
    again = requests.post(f"{url}/v1/gallery/identities", data={"identity": "alice"},
                          files=[("images", ("a.jpg", photos["person_a_1"]))], timeout=60).json()
    assert again["enrolled"] == 0 and again["already_enrolled"] == 1 and again["size"] == 2
    info = requests.get(f"{url}/v1/gallery", timeout=30).json()
    assert info["size"] == 2 and info["dim"] == 512 and info["threshold"] == 0.5
    assert info["identities"] == [{"identity": "alice", "images": 1}, {"identity": "bob", "images": 1}]
    on_disk = FaceGallery.load(folder)
    assert on_disk.image_counts() == {"alice": 1, "bob": 1}

    answer = requests.post(f"{url}/v1/identify", files={"image": photos["person_a_1"]}, data={"annotate": "true"},
                           timeout=60)
    assert answer.status_code == 200, answer.text
    (face,) = answer.json()["faces"]
    alice = pipeline(str(portraits["person_a_1"]), max_faces=1)["img_embedding"][0].astype(np.float64)
    bob = pipeline(str(portraits["person_b_1"]), max_faces=1)["img_embedding"][0].astype(np.float64)
    assert face["identity"] == "alice" and face["similarity"] > 0.9999
    candidates = {c["identity"]: c["similarity"] for c in face["candidates"]}
    assert abs(candidates["bob"] - float(alice @ bob)) <= 1e-5
    assert set(face) == {"box", "det_score", "landmarks", "identity", "similarity", "candidates"}
    _check_annotated(answer.json()["annotated_image"], photos["person_a_1"])
    strict = requests.post(f"{url}/v1/identify", json={"image": base64.b64encode(photos["person_b_2"]).decode(),
                                                       "threshold": 1.0, "top_k": 1}, timeout=60).json()
    assert [f["identity"] for f in strict["faces"]] == ["unknown"] and len(strict["faces"][0]["candidates"]) == 1
    assert "annotated_image" not in strict

    removed = requests.delete(f"{url}/v1/gallery/identities/bob", timeout=30)
    assert removed.status_code == 200 and removed.json() == {"identity": "bob", "removed": 1}
    assert requests.delete(f"{url}/v1/gallery/identities/bob", timeout=30).status_code == 404
    assert FaceGallery.load(folder).image_counts() == {"alice": 1}


def _check_annotated(data_url: str, photo: bytes) -> None:
    from PIL import Image

    assert data_url.startswith("data:image/jpeg;base64,")
    drawn = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
    original = Image.open(io.BytesIO(photo))
    assert drawn.format == "JPEG" and drawn.size == original.size


def test_another_process_write_is_seen(server, pipeline, portraits):
    """A change made to the folder outside the server (here: this process, as `facemask gallery add` would) shows
    in the next answer."""
    from modelscope_facemask.tools.gallery.face_gallery import FaceGallery
    from modelscope_facemask.tools.gallery.gallery_folder import writer_lock

    url, folder = server[:2]
    requests.post(f"{url}/v1/gallery/identities", data={"identity": "carol"},
                  files=[("images", ("c.jpg", Path(portraits["impostor_2"]).read_bytes()))], timeout=60)
    with writer_lock(folder):
        gallery = FaceGallery.load(folder)
        embedding = pipeline(str(portraits["person_b_2"]), max_faces=1)["img_embedding"]
        gallery.add(embedding, ["dave"], ["outside:dave.jpg"])
        gallery.save(folder, replace=True)
    names = [i["identity"] for i in requests.get(f"{url}/v1/gallery", timeout=30).json()["identities"]]
    assert "dave" in names and "carol" in names


def test_health_ready_and_metrics(server):
    url = server[0]
    assert requests.get(f"{url}/healthz", timeout=30).json() == {"status": "alive"}
    ready = requests.get(f"{url}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    names = {s.name for s in metric_samples(url, "facemask_")}
    for expected_name in ("facemask_requests_total", "facemask_request_duration_seconds_bucket",
                          "facemask_batch_size_bucket", "facemask_queue_depth", "facemask_faces_processed_total"):
        assert expected_name in names, names
    routes = {s.labels["route"] for s in metric_samples(url, "facemask_requests_total")}
    assert "/v1/embed" in routes and "/healthz" in routes


def test_the_console_is_served_from_its_folder(server):
    from modelscope_facemask.tools.serve.console import console_folder

    url = server[0]
    page = requests.get(f"{url}/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text == (console_folder() / "index.html").read_text(encoding="utf-8")
    for name in ("../app.py", "nothing.js"):
        assert requests.get(f"{url}/console/{name}", timeout=30).status_code == 404


def test_identify_is_answered_while_an_enrolment_is_being_written(server, photos, monkeypatch):
    url, _, gallery = server
    writing, release = threading.Event(), threading.Event()
    original = gallery._enrol

    def slow_enrol(*args, **kwargs):
        writing.set()
        assert release.wait(60)
        return original(*args, **kwargs)

    monkeypatch.setattr(gallery, "_enrol", slow_enrol)
    done: dict[str, requests.Response] = {}
    writer = threading.Thread(target=lambda: done.setdefault("enrol", requests.post(
        f"{url}/v1/gallery/identities", data={"identity": "erin"}, files={"images": photos["impostor_1"]},
        timeout=120)))
    writer.start()
    try:
        assert writing.wait(60)
        answer = requests.post(f"{url}/v1/identify", files={"image": photos["person_a_1"]}, timeout=60)
        assert answer.status_code == 200 and "erin" not in answer.text  # the previous gallery answers
    finally:
        release.set()
        writer.join(120)
    assert done["enrol"].status_code == 200, done["enrol"].text
    after = requests.post(f"{url}/v1/identify", files={"image": photos["impostor_1"]}, timeout=60).json()
    assert after["faces"][0]["candidates"][0]["identity"] == "erin"  # visible to the next identify
