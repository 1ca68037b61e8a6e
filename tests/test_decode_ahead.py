"""Decode-ahead: the next chunk of a list is decoded in a thread while the current one computes, in order, at most
two chunks decoded at a time, a bad item keeping its slot, outputs identical to the plain path."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from modelscope_facemask.faces.decode_ahead import chunks_ahead
from modelscope_facemask.modelscope_adapters import pipeline as pipeline_module
from modelscope_facemask.modelscope_adapters.pipeline import FaceMaskPipeline


def test_chunks_keep_order_and_errors_and_hold_at_most_two_chunks() -> None:
    lock = threading.Lock()
    decoded = []  # items loaded so far, in load order

    def load(item: int) -> int:
        if item == 7:
            raise ValueError("bad item 7")
        with lock:
            decoded.append(item)
        return item * 10

    consumed = 0
    seen = []
    for chunk, loaded in chunks_ahead(list(range(23)), 4, load):
        time.sleep(0.02)  # a slow consumer: the loader must wait instead of running ahead
        with lock:
            assert len(decoded) - consumed <= 2 * 4  # this chunk and the next, never more
        seen += list(zip(chunk, loaded))
        consumed += len(chunk)
    assert [item for item, _ in seen] == list(range(23))
    assert all(value == item * 10 for item, value in seen if item != 7)
    assert isinstance(seen[7][1], ValueError) and str(seen[7][1]) == "bad item 7"
    assert decoded == [i for i in range(23) if i != 7]


@pytest.fixture(scope="module")
def pipe(small_model_dir: Path) -> FaceMaskPipeline:
    return FaceMaskPipeline(str(small_model_dir), device="cpu", max_faces=None)


def test_cpu_default_is_the_plain_path(pipe: FaceMaskPipeline) -> None:
    assert pipe.decode_ahead is False


def test_decode_ahead_outputs_equal_the_plain_path_with_a_bad_item_in_the_middle(pipe, portraits, mixed_images,
                                                                                  monkeypatch) -> None:
    good = [str(portraits[k]) for k in ("person_a_1", "person_a_2", "person_b_1", "impostor_1")]
    inputs = good * 2 + [str(mixed_images["corrupt"])] + [str(mixed_images["group"])] + good
    monkeypatch.setattr(pipeline_module, "IMAGES_PER_CHUNK", 3)
    plain = pipe(inputs)
    live = {"now": 0, "max": 0}
    lock = threading.Lock()
    real_load, real_prepare = pipeline_module.load_image, pipe.preprocessor.prepare

    def counting_load(source):
        image = real_load(source)
        with lock:
            live["now"] += 1
            live["max"] = max(live["max"], live["now"])
        return image

    def counting_prepare(chunk, **kwargs):
        try:
            return real_prepare(chunk, **kwargs)
        finally:
            with lock:
                live["now"] -= sum(not isinstance(x, BaseException) for x in kwargs["loaded"])

    monkeypatch.setattr(pipeline_module, "load_image", counting_load)
    monkeypatch.setattr(pipe.preprocessor, "prepare", counting_prepare)
    monkeypatch.setattr(pipe, "decode_ahead", True)
    ahead = pipe(inputs)
    assert 3 < live["max"] <= 2 * 3  # it did decode ahead, and never more than two chunks
    assert len(ahead) == len(plain) == len(inputs)
    for i, (a, b) in enumerate(zip(plain, ahead)):
        assert a.keys() == b.keys(), i
        for key in a:
            if key == "error":
                assert a[key] == b[key]
            else:
                assert np.array_equal(a[key], b[key]), (i, key)
    assert "error" in ahead[8] and len(ahead[8]["img_embedding"]) == 0
    assert len(ahead[9]["boxes"]) == 2 and all(len(ahead[i]["boxes"]) >= 1 for i in (0, 7, 10, 13))


def test_embed_sources_decodes_ahead_with_equal_outputs(pipe, portraits, mixed_images, monkeypatch) -> None:
    from modelscope_facemask.tools.corpus import embedding_runs

    sources = [str(portraits["person_a_1"]), str(mixed_images["corrupt"]), str(portraits["person_b_1"]),
               str(mixed_images["blank"]), str(portraits["impostor_1"])]
    plain = embedding_runs.embed_sources(pipe, sources, batch_size=2)
    calls = []
    real = embedding_runs.chunks_ahead
    monkeypatch.setattr(embedding_runs, "chunks_ahead", lambda *a: calls.append(a[1]) or real(*a))
    monkeypatch.setattr(pipe, "decode_ahead", True)
    ahead = embedding_runs.embed_sources(pipe, sources, batch_size=2)
    assert calls == [2]
    assert [sorted(o) for o in ahead] == [sorted(o) for o in plain]
    for a, b in zip(plain, ahead):
        for key in a:
            assert (a[key] == b[key]) if key == "error" else np.array_equal(a[key], b[key])
    assert "error" in ahead[1] and "error" not in ahead[0] and len(ahead[3]["boxes"]) == 0


def test_device_defaults_keep_the_cpu_path(pipe) -> None:
    """CPU: recognizer batches of 32 and chunks of 16 as before; CUDA would take 256 and 64 (no GPU in CI)."""
    from modelscope_facemask.faces.recognizer import default_batch_size

    assert pipe.model.recognizer.batch_size == 32 == default_batch_size("cpu")
    assert default_batch_size("cuda:0") == 256
    assert pipeline_module.IMAGES_PER_CHUNK == 16 and pipeline_module.CUDA_IMAGES_PER_CHUNK == 64
