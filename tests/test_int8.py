"""int8 (``precision='int8'``): ``facemask quantize`` of the small IResNet with the real mobilenet0.25 detector,
calibrated on four of the real portraits and measured on the other two; then loading the folder and embedding.

The fidelity report is checked against an independent computation: the fp32 embeddings of the held-out crops from
the torch module run by hand, the int8 ones from OpenVINO compiling the folder's graph directly, cosines, IoU
matching and landmark distances computed here in numpy. The hashes in the manifest are recomputed with hashlib.
Nothing asserts a speed or an accuracy bound of the small untrained network (its report says whether it is within
the issue's bounds; the figures that count are those of the user's own weights).
"""
from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pytest
import torch

from modelscope_facemask import FaceMaskPipeline
from modelscope_facemask.cli import main
from modelscope_facemask.errors import ConfigurationError
from modelscope_facemask.model_files.checkpoints import save_state_dict
from modelscope_facemask.tools.demo.synthetic_weights import synthetic_recognizer

from .fixture_data import SMALL_UNITS, linked_copy

pytest.importorskip("openvino")
pytest.importorskip("nncf")

HELD_OUT = 2
AGREE = 1e-6


def _sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, small_model_dir, portraits):
    """`facemask quantize` on the six portraits (two held out); returns (folder, manifest, report, --json-out)."""
    root = tmp_path_factory.mktemp("int8")
    out, doc = root / "int8", root / "quantize.json"
    argv = ["quantize", "--model", str(small_model_dir), "--calibration", *[str(p) for p in portraits.values()],
            "--out", str(out), "--held-out", str(HELD_OUT), "--json-out", str(doc)]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    report = json.loads((out / "fidelity.json").read_text())
    return out, manifest, report, json.loads(doc.read_text())


@pytest.fixture(scope="module")
def pipes(small_model_dir, quantized):
    folder = str(quantized[0])
    return {"fp32": FaceMaskPipeline(str(small_model_dir), device="cpu", max_faces=None),
            "int8": FaceMaskPipeline(str(small_model_dir), device="cpu", max_faces=None, precision="int8",
                                     engine="openvino", engine_dir=folder)}


def test_quantize_writes_the_int8_graphs_a_manifest_and_a_report(quantized, small_model_dir, portraits, capsys):
    out, manifest, report, doc = quantized
    assert sorted(p.name for p in out.iterdir()) == ["detector.bin", "detector.xml", "fidelity.json",
                                                      "manifest.json", "recognizer.bin", "recognizer.xml"]
    assert doc == {"manifest": manifest, "report": report}
    assert manifest["output"] == "quantize" and manifest["precision"] == "int8"
    assert manifest["int8_networks"] == {"recognizer": True, "detector": False}  # the measured default
    for name in ("detector.xml", "fidelity.json", "recognizer.bin", "recognizer.xml"):
        assert manifest["files"][name] == {"sha256": _sha256(out / name), "size": (out / name).stat().st_size}
    assert manifest["source_weights_sha256"] == {
        "recognizer": _sha256(small_model_dir / "pytorch_model.pt"),
        "detector": _sha256(small_model_dir / "detector" / "pytorch_model.pt")}
    digests = sorted(_sha256(p) for p in portraits.values())
    assert manifest["calibration"]["sha256"] == hashlib.sha256("\n".join(digests).encode()).hexdigest()
    assert manifest["calibration"]["images_given"] == 6 and manifest["calibration"]["held_out_images"] == HELD_OUT
    import nncf
    import openvino

    assert manifest["tool_versions"]["nncf"] == nncf.__version__
    assert manifest["tool_versions"]["openvino"].split("-")[0] in openvino.__version__
    # the held-out images are not among the calibration images, and the two cover the set
    names = sorted(p.name for p in portraits.values())
    assert len(report["held_out_images"]) == HELD_OUT
    assert not set(report["held_out_images"]) & set(report["calibration_images"])
    assert sorted(report["held_out_images"] + report["calibration_images"]) == names
    # the int8 graph holds int8 operations; the fp32 detector graph none
    assert "i8" in (out / "recognizer.xml").read_text() and 'element_type="i8"' not in (out / "detector.xml").read_text()


def _by_hand_fp32(net: torch.nn.Module, crops: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        x = torch.from_numpy(((crops / 255.0 - 0.5) / 0.5).astype(np.float32)).permute(0, 3, 1, 2).contiguous()
        raw = net(x).numpy().astype(np.float64)
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)


def _openvino_int8(folder, crops: np.ndarray) -> np.ndarray:
    import openvino as ov

    compiled = ov.Core().compile_model(str(folder / "recognizer.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = ((crops / 255.0 - 0.5) / 0.5).astype(np.float32).transpose(0, 3, 1, 2).copy()
    raw = np.concatenate([compiled(x[i : i + 1])[0] for i in range(len(x))]).astype(np.float64)
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def test_the_report_agrees_with_an_independent_computation(quantized, pipes, portraits):
    out, _, report, _ = quantized
    held = [str(next(p for p in portraits.values() if p.name == name)) for name in report["held_out_images"]]
    crops = np.concatenate([p.crops for p in pipes["fp32"].preprocessor.prepare(held, max_faces=None)])
    fp32, int8 = _by_hand_fp32(pipes["fp32"].model.net, crops), _openvino_int8(out, crops)
    cos = np.sum(fp32 * int8, axis=1)
    rec = report["recognizer_identical_crops"]
    assert rec["faces"] == len(crops) >= HELD_OUT
    assert abs(rec["min_cosine"] - cos.min()) <= AGREE and abs(rec["median_cosine"] - np.median(cos)) <= AGREE
    # end to end: the torch fp32 pipeline against the int8 pipeline, faces matched by IoU >= 0.9
    ref, got = pipes["fp32"](held), pipes["int8"](held)
    e2e_cos, px, lost, extra = [], [], 0, 0
    for r, g in zip(ref, got):
        pairs = [(i, j) for i in range(len(r["boxes"])) for j in range(len(g["boxes"]))
                 if _iou(r["boxes"][i], g["boxes"][j]) >= 0.9]
        assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs})  # one-to-one here
        lost += len(r["boxes"]) - len(pairs)
        extra += len(g["boxes"]) - len(pairs)
        for i, j in pairs:
            a, b = r["img_embedding"][i].astype(np.float64), g["img_embedding"][j].astype(np.float64)
            e2e_cos.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
            d = r["keypoints"][i].astype(np.float64).reshape(5, 2) - g["keypoints"][j].astype(np.float64).reshape(5, 2)
            px.append(np.sqrt((d ** 2).sum(axis=1)).max())
    e2e = report["end_to_end"]
    assert (e2e["lost"], e2e["extra"], e2e["matched"]) == (lost, extra, len(e2e_cos))
    assert abs(e2e["min_cosine"] - min(e2e_cos)) <= AGREE and abs(e2e["median_cosine"] - np.median(e2e_cos)) <= AGREE
    assert abs(e2e["landmark_px_max"] - max(px)) <= AGREE and abs(e2e["landmark_px_median"] - np.median(px)) <= AGREE
    assert report["within_bounds"]["faces_lost"] == (lost == 0)


def test_int8_pipeline_embeds_and_says_which_networks_run_int8(small_model_dir, quantized, pipes, portraits, caplog):
    out = quantized[0]
    photos = [str(p) for p in portraits.values()]
    results = pipes["int8"](photos)
    assert all("error" not in r and len(r["scores"]) >= 1 for r in results)
    for r in results:
        assert r["img_embedding"].dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(r["img_embedding"], axis=1), 1.0, atol=1e-5)
    assert pipes["int8"].precision == "int8" and pipes["int8"].engine == "openvino"
    assert pipes["int8"].int8_networks == {"recognizer": True, "detector": False}
    with caplog.at_level(logging.INFO, logger="modelscope.facemask"):
        FaceMaskPipeline(str(small_model_dir), device="cpu", precision="int8", engine="openvino", engine_dir=str(out))
    lines = [r.getMessage() for r in caplog.records]
    assert any("runs on cpu in int8" in line and "(int8: recognizer; fp32: detector)" in line for line in lines), lines
    # the CLI's --precision int8
    assert main(["embed", "--model", str(small_model_dir), "--device", "cpu", "--precision", "int8", "--engine",
                 "openvino", "--engine-dir", str(out), photos[0]]) == 0


def test_int8_from_the_configuration(small_model_dir, quantized, tmp_path):
    folder = linked_copy(small_model_dir, tmp_path / "model")
    config = json.loads((folder / "configuration.json").read_text())
    config.setdefault("model", {}).update(precision="int8", engine="openvino")
    (folder / "configuration.json").write_text(json.dumps(config))
    pipe = FaceMaskPipeline(str(folder), device="cpu", engine_dir=str(quantized[0]))
    assert pipe.int8_networks == {"recognizer": True, "detector": False}
    with pytest.raises(ConfigurationError, match="facemask quantize"):
        FaceMaskPipeline(str(folder), device="cpu")  # no engine_dir


def test_a_folder_made_from_other_weights_is_refused(small_model_dir, quantized, tmp_path):
    folder = linked_copy(small_model_dir, tmp_path / "other")
    (folder / "pytorch_model.pt").unlink()
    save_state_dict(synthetic_recognizer(SMALL_UNITS, seed=1).state_dict(), folder / "pytorch_model.pt")
    theirs = quantized[1]["source_weights_sha256"]["recognizer"]
    ours = _sha256(folder / "pytorch_model.pt")
    assert ours != theirs
    with pytest.raises(ConfigurationError) as caught:
        FaceMaskPipeline(str(folder), device="cpu", precision="int8", engine="openvino", engine_dir=str(quantized[0]))
    message = str(caught.value)
    assert theirs in message and ours in message and "facemask quantize" in message


@pytest.mark.parametrize("options, fix", [
    ({"precision": "int8", "engine": "openvino"}, "facemask quantize"),  # no engine_dir
    ({"precision": "int8"}, "engine='openvino' only"),  # the torch engine
    ({"precision": "int8", "engine": "onnxruntime", "engine_dir": "x"}, "engine='openvino' only"),
])
def test_int8_without_its_folder_or_engine_is_refused(small_model_dir, options, fix):
    with pytest.raises(ConfigurationError, match=fix):
        FaceMaskPipeline(str(small_model_dir), device="cpu", **options)


def test_int8_and_fp32_folders_are_not_mixed_up(small_model_dir, quantized, tmp_path):
    with pytest.raises(ConfigurationError, match="holds int8 graphs"):
        FaceMaskPipeline(str(small_model_dir), device="cpu", engine="openvino", engine_dir=str(quantized[0]))
    exported = tmp_path / "fp32"
    assert main(["export", "--format", "openvino", "--model", str(small_model_dir), "--out", str(exported)]) == 0
    with pytest.raises(ConfigurationError, match="not int8 ones"):
        FaceMaskPipeline(str(small_model_dir), device="cpu", precision="int8", engine="openvino",
                         engine_dir=str(exported))


def test_quantize_refuses_before_any_work(small_model_dir, quantized, portraits, tmp_path, capsys):
    photos = [str(p) for p in portraits.values()]
    base = ["quantize", "--model", str(small_model_dir), "--calibration", *photos]
    assert main([*base, "--out", str(quantized[0])]) == 2  # an earlier output, without --force
    assert "pass --force" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "a"), "--held-out", "6"]) == 2
    assert "--held-out 6 of 6" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--engine", "onnxruntime"]) == 2
    assert "not offered yet" in capsys.readouterr().err
    assert main([*base, "--out", str(small_model_dir / "int8")]) == 2  # inside the model folder it reads
    assert "overlap" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in ("a", "b")) and not (small_model_dir / "int8").exists()


def test_calibration_split_and_matching_rules(tmp_path):
    """The split (held-out images spread over the sorted list) and the one-to-one IoU >= 0.9 matching, on cases
    built by hand."""
    from modelscope_facemask.tools.quantize.calibration import split_calibration
    from modelscope_facemask.tools.quantize.fidelity import match_faces

    images = [tmp_path / f"{i}.jpg" for i in range(6)]
    split = split_calibration(images, held_out=2)
    assert split.held_out == [images[1], images[4]] and split.calibration == [images[i] for i in (0, 2, 3, 5)]
    assert split_calibration(images, held_out=1, subset=2).calibration == [images[0], images[1]]
    assert split_calibration(images).held_out == [images[3]]  # default: a fifth, at least one
    with pytest.raises(ConfigurationError, match="--subset"):
        split_calibration(images, subset=0)
    ref = np.array([[0, 0, 100, 100], [200, 0, 300, 100]], np.float32)
    # IoU of [0,0,100,100] with [0,0,100,105] is 100*100 / (100*105) = 0.952; with [0,0,100,115]: 0.870
    got = np.array([[200, 0, 300, 100], [0, 0, 100, 105], [0, 0, 100, 115]], np.float32)
    assert match_faces(ref, got) == [(0, 1), (1, 0)]
    assert match_faces(ref, got[2:]) == []
