"""Hub faults through the loopback emulator and ModelScope's own client: HTTP 500s, truncated downloads, a wrong
sha256 in the listing, an unknown id. Each must give a clear error naming the model and the cause, leave nothing in
ModelScope's cache that a later run (online or offline) takes as valid, and a healthy hub afterwards must give the
right weights.

ModelScope's retry delays are its own (about 30 s per failing file with the defaults; ``MODELSCOPE_DOWNLOAD_MAX_RETRIES``
and ``MODELSCOPE_DOWNLOAD_RETRY_MAX_DELAY_SECONDS`` tune them); the tests shorten them through the same module
constants so that each case takes seconds.
"""
from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch

from modelscope_facemask.model_files.checkpoints import TORCH_WEIGHTS
from modelscope_facemask.errors import CheckpointError, FaceMaskError, HubDownloadError, ModelSourceError
from modelscope_facemask.model_files.model_folders import local_model_dir
from modelscope_facemask.tools.hub.repository_writers import facemask_configuration
from modelscope_facemask.testing.hub_emulator import HubEmulator, hub_environment, reset_hub_config

from .fixture_data import SMALL_UNITS, linked_facemask_repo

MODEL_ID = "facemask-test/faulty-model"


@pytest.fixture
def hub(tmp_path, monkeypatch, small_model_dir):
    """An emulator holding MODEL_ID (small recognizer, its weights hard-linked: the emulator only reads them), the
    process pointed at it, ModelScope's retries shortened."""
    import modelscope_hub._download as download
    import modelscope_hub._legacy_api as legacy

    monkeypatch.setattr(download, "DOWNLOAD_RETRY_TIMES", 1)
    monkeypatch.setattr(download, "DOWNLOAD_RETRY_MAX_DELAY_SECONDS", 0)
    monkeypatch.setattr(download, "DOWNLOAD_INTEGRITY_RETRY_BACKOFF", 0.0)
    monkeypatch.setattr(legacy, "REPO_TREE_PAGE_RETRY_MAX_DELAY_SECONDS", 0)
    with HubEmulator(tmp_path / "hub-root") as emulator:
        linked_facemask_repo(emulator.repo_dir(MODEL_ID), small_model_dir, facemask_configuration(units=SMALL_UNITS))
        for key, value in hub_environment(emulator, tmp_path / "ms-cache", tmp_path / "ms-home").items():
            monkeypatch.setenv(key, value)
        reset_hub_config()
        yield emulator
    reset_hub_config()


def _load(model: str):
    from modelscope_facemask.modelscope_adapters.model import FaceMaskModel

    return FaceMaskModel.from_pretrained(model, device="cpu")


def _assert_correct_weights(model, state: dict[str, torch.Tensor]) -> None:
    loaded = model.net.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k].cpu(), state[k]) for k in state)


def _snapshot(tmp_path: Path) -> Path:
    return tmp_path / "ms-cache" / "models" / MODEL_ID.replace("/", "--") / "snapshots" / "master"


def _offline_snapshot() -> str:
    from modelscope.hub.snapshot_download import snapshot_download

    return snapshot_download(MODEL_ID, local_files_only=True)


FAULTS = {
    "http_500_on_the_weights": (lambda hub: hub.fail_requests(r"/repo$", status=500), "HTTP 500"),
    "http_500_on_the_listing": (lambda hub: hub.fail_requests(r"/repo/files$", status=500), "HTTP 500"),
    "truncated_weights": (lambda hub: hub.truncate_file(MODEL_ID, TORCH_WEIGHTS), TORCH_WEIGHTS),
    "wrong_sha256_in_listing": (lambda hub: hub.corrupt_listing(MODEL_ID, TORCH_WEIGHTS), "Hash mismatch"),
    "wrong_size_in_listing": (lambda hub: hub.corrupt_listing(MODEL_ID, TORCH_WEIGHTS, sha256=None, size=1234),
                              TORCH_WEIGHTS),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_is_a_clear_error_and_leaves_nothing_taken_as_valid(fault, hub, tmp_path, small_recognizer_state):
    inject, cause = FAULTS[fault]
    inject(hub)
    started = time.monotonic()
    with pytest.raises(HubDownloadError) as caught:
        _load(MODEL_ID)
    message = str(caught.value)
    assert MODEL_ID in message and hub.endpoint in message and cause in message, message
    assert caught.value.__cause__ is not None  # ModelScope's own exception, chained
    assert time.monotonic() - started < 20
    assert sum(hub.fault_hits) >= 1

    weights = _snapshot(tmp_path) / TORCH_WEIGHTS
    assert not weights.exists()  # never a bad file under its final name
    # offline, ModelScope may hand out the incomplete snapshot folder: loading it must refuse, saying what to do
    try:
        offline = _offline_snapshot()
    except Exception as exc:  # noqa: BLE001 - ModelScope's CacheNotFound: nothing usable was cached at all
        assert "Cannot find cached snapshot" in str(exc)
    else:
        with pytest.raises((CheckpointError, ModelSourceError)) as refused:
            _load(offline)
        assert offline in str(refused.value) and ("download" in str(refused.value))

    hub.clear_faults()
    _assert_correct_weights(_load(MODEL_ID), small_recognizer_state)  # a healthy hub repairs the cache
    _assert_correct_weights(_load(_offline_snapshot()), small_recognizer_state)


def test_transient_truncation_is_resumed_to_the_right_bytes(hub, small_recognizer_state):
    hub.truncate_file(MODEL_ID, TORCH_WEIGHTS, times=1)
    _assert_correct_weights(_load(MODEL_ID), small_recognizer_state)
    assert hub.fault_hits == [1]


def test_interrupted_download_left_in_the_cache_is_refused(hub, tmp_path):
    hub.truncate_file(MODEL_ID, TORCH_WEIGHTS)
    with pytest.raises(HubDownloadError):
        _load(MODEL_ID)
    partial = sorted(p.name for p in _snapshot(tmp_path).iterdir())
    assert f"{TORCH_WEIGHTS}.incomplete" in partial  # ModelScope keeps it to resume
    with pytest.raises(ModelSourceError, match=r"incomplete download \(pytorch_model\.pt\.incomplete"):
        local_model_dir(_offline_snapshot())


def test_unknown_hub_id_fails_fast_naming_the_id(hub):
    started = time.monotonic()
    with pytest.raises(HubDownloadError, match=r"'facemask-test/no-such-model' does not exist on the ModelScope hub"):
        _load("facemask-test/no-such-model")
    assert time.monotonic() - started < 5


def test_unknown_hub_id_through_pipeline_fails_fast(hub):
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    started = time.monotonic()
    with pytest.raises(ValueError, match="no-such-model"):  # ModelScope's own check runs first: "invalid model repo path"
        pipeline(Tasks.face_recognition, "facemask-test/no-such-model", device="cpu")
    assert time.monotonic() - started < 5


def test_hub_failure_is_a_facemask_error_for_the_detector_too(hub, tmp_path, small_recognizer_state):
    from modelscope_facemask.modelscope_adapters.configuration import resolve_detector_dir

    with pytest.raises(HubDownloadError, match=r"detector 'facemask-test/no-such-detector' does not exist"):
        resolve_detector_dir("facemask-test/no-such-detector")
    assert issubclass(HubDownloadError, FaceMaskError)


# ---------------------------------------------------------------------------------------------- the emulator itself
def _raw_get(endpoint: str, path: str) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        try:
            body = response.read()
        except http.client.IncompleteRead as exc:
            body = exc.partial
        return response.status, headers, body
    finally:
        conn.close()


def test_emulator_truncation_promises_more_than_it_sends():
    with HubEmulator() as hub:
        hub.add_repo("o/m", {"w.bin": bytes(range(256)) * 40})
        hub.truncate_file("o/m", "w.bin", keep_bytes=100, times=1)
        status, headers, body = _raw_get(hub.endpoint, "/api/v1/models/o/m/repo?FilePath=w.bin")
        assert status == 200 and int(headers["content-length"]) == 10240 and body == (bytes(range(256)) * 40)[:100]
        status, headers, body = _raw_get(hub.endpoint, "/api/v1/models/o/m/repo?FilePath=w.bin")
        assert len(body) == int(headers["content-length"]) == 10240  # times=1: healthy again
        assert hub.fault_hits == [1]


def test_emulator_listing_and_status_faults():
    with HubEmulator() as hub:
        hub.add_repo("o/m", {"a.txt": b"aaa", "b.txt": b"bbb"})
        hub.corrupt_listing("o/m", "b.txt", sha256="f" * 64, size=7)
        hub.fail_requests(r"^/api/v1/models/o/m$", status=503, times=2)
        _, _, body = _raw_get(hub.endpoint, "/api/v1/models/o/m/repo/files?Revision=master&Recursive=True")
        files = {f["Path"]: f for f in json.loads(body)["Data"]["Files"]}
        assert (files["b.txt"]["Sha256"], files["b.txt"]["Size"]) == ("f" * 64, 7)
        assert files["a.txt"]["Size"] == 3 and files["a.txt"]["Sha256"] != "f" * 64
        statuses = [_raw_get(hub.endpoint, "/api/v1/models/o/m")[0] for _ in range(3)]
        assert statuses == [503, 503, 200]
        hub.clear_faults()
        assert hub.fault_hits == []


def test_emulator_has_no_delete_route():
    with HubEmulator() as hub:
        parts = urlsplit(hub.endpoint)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request("DELETE", "/api/v1/models/o/m")
        assert conn.getresponse().status == 501  # the stdlib's "Unsupported method": nothing is deleted
        conn.close()
