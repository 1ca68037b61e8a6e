"""`facemask serve --ray` on a local Ray instance with 2 replicas: the same answers as the single-process server,
from both replicas, with enrolment and deletion through the one gallery writer visible to every replica, and a
clean exit on SIGTERM."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from modelscope_facemask.testing.served_process import ServedFaceMask

pytest.importorskip("ray.serve", reason="Ray Serve missing: pip install -e '.[test]'")
pytest.importorskip("fastapi", reason="the [serve] extra is missing: pip install -e '.[test]'")

REPLICA_HEADER = "X-FaceMask-Replica"


@pytest.fixture(scope="module")
def servers(small_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-ray")
    # Ray gives each replica OMP_NUM_THREADS = its CPUs (1 here); the reference server runs on one thread too, since
    # the thread count moves the detector's boxes by ~4e-6 px and so the embeddings by ~8e-6 (measured)
    with ServedFaceMask(small_model_dir, gallery=folder / "single", env={"OMP_NUM_THREADS": "1"}) as single, \
            ServedFaceMask(small_model_dir, gallery=folder / "ray",
                           args=["--ray", "--replicas", "2", "--cpus-per-replica", "0.5"]) as ray:
        yield single, ray
        assert ray.stop() == 0, ray.output


def _enrol(url: str, identity: str, photo) -> dict:
    response = requests.post(url + "/v1/gallery/identities", data={"identity": identity},
                             files={"images": photo.read_bytes()}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _identify(url: str, photo) -> tuple[dict, str]:
    response = requests.post(url + "/v1/identify", files={"image": photo.read_bytes()}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json(), response.headers.get(REPLICA_HEADER, "")


def test_ray_replicas_answer_as_the_single_process_server(servers, portraits):
    single, ray = servers
    assert "Ray Serve, 2 replica(s)" in ray.output
    photo = portraits["person_a_2"]
    embedded = [requests.post(server.url + "/v1/embed", files={"images": photo.read_bytes()}, timeout=120).json()
                for server in (single, ray)]
    a, b = (np.asarray(answer["images"][0]["faces"][0]["embedding"]) for answer in embedded)
    assert np.abs(a - b).max() <= 1e-6

    assert _enrol(single.url, "alice", portraits["person_a_1"])["enrolled"] == 1
    assert _enrol(ray.url, "alice", portraits["person_a_1"])["enrolled"] == 1  # through the gallery writer
    expected, _ = _identify(single.url, photo)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _identify(ray.url, photo), range(24)))
    replicas = {replica for _, replica in answers}
    assert len(replicas) == 2, f"answers came from {replicas}: both replicas must serve"
    for answer, _ in answers:
        face, want = answer["faces"][0], expected["faces"][0]
        assert face["identity"] == want["identity"] == "alice"
        assert abs(face["similarity"] - want["similarity"]) <= 1e-6
        assert np.allclose(face["box"], want["box"], atol=1e-4)


def test_ray_deletion_is_seen_by_every_replica(servers, portraits):
    _, ray = servers
    _enrol(ray.url, "bob", portraits["impostor_1"])
    info = requests.get(ray.url + "/v1/gallery", timeout=30).json()
    assert {"bob", "alice"} <= {entry["identity"] for entry in info["identities"]}
    response = requests.delete(ray.url + "/v1/gallery/identities/bob", timeout=60)
    assert response.status_code == 200 and response.json()["removed"] == 1
    missing = requests.delete(ray.url + "/v1/gallery/identities/bob", timeout=60)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_identity"
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _identify(ray.url, portraits["impostor_1"]), range(16)))
    assert len({replica for _, replica in answers}) == 2
    assert all(answer["faces"][0]["identity"] != "bob" for answer, _ in answers)
