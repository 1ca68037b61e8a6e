"""`facemask regress`: the committed reference passes, small weight changes are caught, usage errors exit 2.

The committed reference (tests/regression/reference.npz, provenance in tests/regression/README.md) was made from
the deterministic test model that ``tests/regression/inputs.py`` builds; the session fixtures hold the same tensors.
"""
from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelscope_facemask.model_files.checkpoints import TORCH_WEIGHTS, read_state_dict, save_state_dict
from modelscope_facemask.cli import main
from modelscope_facemask.model_files.manifest import file_sha256
from modelscope_facemask.tools.regress import (
    CROSS_DEVICE,
    SAME_DEVICE,
    ReferenceError,
    choose_tolerances,
    load_reference,
)

from .fixture_data import DETECTOR_DIR, linked_copy

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "regression" / "reference.npz"


@pytest.fixture(scope="module")
def model_dir(small_model_dir) -> Path:
    return small_model_dir  # the regression model of tests/regression/inputs.py, shared: read only


@pytest.fixture(scope="module")
def images(portraits) -> Path:
    return next(iter(portraits.values())).parent


def _check(model: Path, images: Path, *extra: str, reference: Path = REFERENCE) -> int:
    return main(["regress", "check", "--model", str(model), "--reference", str(reference), "--images", str(images),
                 "--device", "cpu", *extra])


def _perturbed(model_dir: Path, tmp_path: Path, weights: str, key: str, change) -> Path:
    """A copy of the model with ``change`` applied to every tensor whose name matches ``key`` (a glob); the changed
    weights file is a new file (save_state_dict renames it into place), the linked original keeps its bytes."""
    copy = tmp_path / "perturbed"
    linked_copy(model_dir, copy)
    state = read_state_dict(copy / weights)
    matched = [k for k in state if fnmatch.fnmatchcase(k, key)]
    assert matched, key
    for name in matched:
        state[name] = change(state[name].clone())
    save_state_dict(state, copy / weights)
    return copy


def test_committed_reference_passes(model_dir, images, tmp_path, capsys):
    assert _check(model_dir, images, "--json-out", str(tmp_path / "report.json")) == 0
    out = capsys.readouterr().out
    assert "PASS: 6 images, 6 faces within tolerance" in out and "tolerances (same-device)" in out
    assert "warning" not in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "pass" and report["failures"] == [] and len(report["images"]) == 6
    assert report["tolerances"] == {"min_cos": 0.999999, "min_cos_recognizer": 0.999999999, "max_landmark_px": 0.01,
                                    "max_box_px": 0.01, "max_score_diff": 1e-5}


def test_reference_records_its_provenance(model_dir, portraits):
    ref = load_reference(REFERENCE)
    meta = ref.metadata
    assert ref.images == sorted(p.name for p in portraits.values())
    assert ref.image_sha256 == [file_sha256(portraits[Path(name).stem]) for name in ref.images]
    assert meta["weights"]["recognizer"]["sha256"] == file_sha256(model_dir / TORCH_WEIGHTS)
    assert meta["weights"]["detector"]["sha256"] == file_sha256(model_dir / DETECTOR_DIR / TORCH_WEIGHTS)
    assert meta["device"] == "cpu" and meta["precision"] == "fp32"
    assert meta["contract"]["max_faces"] == 1 and meta["contract"]["detector"]["channel_order"] == "BGR"
    assert {"modelscope-facemask", "torch", "modelscope"} <= set(meta["versions"])
    assert np.allclose(np.linalg.norm(ref.embeddings, axis=1), 1, atol=1e-6)


def test_ci_script_builds_identical_weights_in_fresh_processes(tmp_path):
    """What CI runs (.ci/regress_check.sh) passes, and the model it builds is bit-identical in every process."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    builds = [subprocess.Popen([sys.executable, "tests/regression/inputs.py", "model", str(tmp_path / f"m{i}")],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in builds)
    recorded = load_reference(REFERENCE).metadata["weights"]
    for i in range(2):
        assert file_sha256(tmp_path / f"m{i}" / TORCH_WEIGHTS) == recorded["recognizer"]["sha256"]
        assert file_sha256(tmp_path / f"m{i}" / DETECTOR_DIR / TORCH_WEIGHTS) == recorded["detector"]["sha256"]
    done = subprocess.run(["bash", ".ci/regress_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS: 6 images" in done.stdout


@pytest.mark.parametrize("key, change", [
    ("body.4.res_layer.3.weight", lambda t: t * 1.001),  # the least visible conv scaling measured (1-cos 2.6e-8)
    ("body.5.res_layer.4.running_mean", lambda t: _add_to_first(t, 0.05)),  # the least visible BN change: 2.1e-8
], ids=["conv-x1.001", "bn-mean+0.05"])
def test_recognizer_weight_change_is_caught(model_dir, images, tmp_path, capsys, key, change):
    perturbed = _perturbed(model_dir, tmp_path, TORCH_WEIGHTS, key, change)
    assert _check(perturbed, images, "--json-out", str(tmp_path / "report.json")) == 1
    out = capsys.readouterr().out
    assert "REGRESSION: 6 of 6 images out of tolerance" in out
    assert "warning: recognizer weights differ from the reference's" in out
    failures = json.loads((tmp_path / "report.json").read_text())["failures"]
    assert {f["field"] for f in failures} == {"recognizer"} and len(failures) == 6
    assert all(1e-9 < f["value"] < 1e-6 for f in failures)  # invisible end to end; only the recognizer check sees it


def _add_to_first(tensor, value: float):
    tensor.view(-1)[0] += value
    return tensor


def test_detector_weight_change_is_caught(model_dir, images, tmp_path, capsys):
    perturbed = _perturbed(model_dir, tmp_path, f"{DETECTOR_DIR}/{TORCH_WEIGHTS}", "body.stage2.0.4.running_mean",
                           lambda t: _add_to_first(t, 0.05))
    assert _check(perturbed, images, "--json-out", str(tmp_path / "report.json")) == 1
    failures = json.loads((tmp_path / "report.json").read_text())["failures"]
    assert {"landmarks", "boxes", "embedding"} <= {f["field"] for f in failures}
    assert "recognizer" not in {f["field"] for f in failures}
    assert "detector weights differ" in capsys.readouterr().out


def test_lost_faces_are_a_regression(model_dir, images, tmp_path, capsys):
    def no_faces(bias):  # (anchors x [background, face]) logits: faces become improbable on every level
        bias.view(-1, 2)[:, 1] -= 20.0
        return bias

    perturbed = _perturbed(model_dir, tmp_path, f"{DETECTOR_DIR}/{TORCH_WEIGHTS}", "ClassHead.*.conv1x1.bias", no_faces)
    assert _check(perturbed, images) == 1
    out = capsys.readouterr().out
    assert "face(s), the reference has 1" in out and "REGRESSION" in out


def test_tolerance_options_override(model_dir, images, tmp_path, capsys):
    perturbed = _perturbed(model_dir, tmp_path, TORCH_WEIGHTS, "body.4.res_layer.3.weight", lambda t: t * 1.001)
    assert _check(perturbed, images, "--min-cos-recognizer", "0.9999999") == 0
    assert "tolerances (same-device with overrides)" in capsys.readouterr().out


def test_contract_change_warns(model_dir, images, tmp_path, capsys):
    copy = tmp_path / "model"
    linked_copy(model_dir, copy)
    config = json.loads((copy / "configuration.json").read_text())
    config["preprocessor"]["min_face_size"] = 12.0  # the portraits' faces are far larger: same outputs
    (copy / "configuration.json").write_text(json.dumps(config))
    assert _check(copy, images) == 0
    out = capsys.readouterr().out
    assert "warning: embedding contract differs from the reference's" in out and "changed: min_face_size)" in out


def test_det_max_side_is_part_of_the_contract(model_dir, images, tmp_path, capsys):
    copy = tmp_path / "model"
    linked_copy(model_dir, copy)
    config = json.loads((copy / "configuration.json").read_text())
    config["preprocessor"]["det_max_side"] = 2000  # the portraits are smaller: no resizing either way, same outputs
    (copy / "configuration.json").write_text(json.dumps(config))
    assert _check(copy, images) == 0
    out = capsys.readouterr().out
    assert "warning: embedding contract differs from the reference's" in out and "detection_settings" in out


def test_usage_errors_exit_2(model_dir, images, tmp_path, capsys):
    assert _check(model_dir, images, reference=tmp_path / "missing.npz") == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "garbage.npz").write_bytes(b"not an npz")
    assert _check(model_dir, images, reference=tmp_path / "garbage.npz") == 2
    assert "not a readable `facemask regress` reference" in capsys.readouterr().err
    partial = tmp_path / "partial"
    shutil.copytree(images, partial)
    (partial / "impostor_2.jpg").unlink()
    (partial / "person_a_1.jpg").write_bytes((partial / "person_a_2.jpg").read_bytes())
    assert _check(model_dir, partial) == 2
    err = capsys.readouterr().err
    assert "impostor_2.jpg is missing" in err and "person_a_1.jpg differs from the image the reference" in err
    assert _check(model_dir, tmp_path / "no-such-folder") == 2
    assert "images folder" in capsys.readouterr().err


def test_create_then_check_all_faces(model_dir, images, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("person_a_1.jpg", "impostor_1.jpg"):
        shutil.copy(images / name, folder / name)
    ref = tmp_path / "ref.npz"
    args = ["regress", "create", "--model", str(model_dir), "--images", str(folder), "--out", str(ref),
            "--device", "cpu", "--max-faces", "all"]
    assert main(args) == 0
    assert main(args) == 2 and "pass --force" in capsys.readouterr().err
    reference = load_reference(ref)
    assert reference.images == ["impostor_1.jpg", "person_a_1.jpg"] and reference.metadata["contract"]["max_faces"] is None
    assert reference.metadata["images_dir"] == str(folder.resolve())
    assert main(["regress", "check", "--model", str(model_dir), "--reference", str(ref), "--device", "cpu"]) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["regress", "create", "--model", str(model_dir), "--images", str(empty), "--out",
                 str(tmp_path / "x.npz")]) == 2


def test_cross_device_tolerances():
    ref = load_reference(REFERENCE)
    assert choose_tolerances(ref, "cpu", "fp32") == (SAME_DEVICE, "same-device")
    assert choose_tolerances(ref, "cuda:0", "fp32+tf32") == (CROSS_DEVICE, "cross-device")
    assert choose_tolerances(ref, "cpu", "fp16")[0] == CROSS_DEVICE
    tol, name = choose_tolerances(ref, "cuda:1", "fp32", {"min_cos": 0.5, "max_box_px": None})
    assert tol.min_cos == 0.5 and tol.max_box_px == CROSS_DEVICE.max_box_px and name == "cross-device with overrides"


# ---------------------------------------------------------------------- bad data can never pass
def _reference_arrays() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return {k: data[k].copy() for k in data.files}


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with path.open("wb") as fh:  # np.savez directly: save_reference would refuse what these tests need
        np.savez_compressed(fh, **arrays)
    return path


def _edited_metadata(change) -> dict[str, np.ndarray]:
    arrays = _reference_arrays()
    meta = json.loads(str(arrays["metadata"]))
    change(meta)
    arrays["metadata"] = np.array(json.dumps(meta))
    return arrays


def _edited(change) -> dict[str, np.ndarray]:
    arrays = _reference_arrays()
    change(arrays)
    return arrays


def _npy_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    return buffer.getvalue()


def _zip_bytes() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not arrays")
    return buffer.getvalue()


def _no_images(arrays):
    for key in ("images", "image_sha256", "face_counts", "boxes", "landmarks", "scores", "embeddings"):
        arrays[key] = arrays[key][:0]


def _set(key, index, value):
    def change(arrays):
        arrays[key] = arrays[key].copy()
        arrays[key][index] = value
    return change


MALFORMED = {  # name: (file content or arrays, words the one-line error must contain)
    "empty": (lambda: b"", "the file is empty"),
    "text file": (lambda: b"this is a text file\n", "not an .npz (zip) archive"),
    "single .npy": (_npy_bytes, "single .npy array"),
    "zip without arrays": (_zip_bytes, "are missing"),
    "truncated": (lambda: REFERENCE.read_bytes()[: REFERENCE.stat().st_size // 2], "damaged or truncated"),
    "pickled object array": (lambda: _edited(lambda a: a.update(images=a["images"].astype(object))), "pickled"),
    "metadata not JSON": (lambda: _edited(lambda a: a.update(metadata=np.array("not json"))), "not valid JSON"),
    "metadata a JSON list": (lambda: _edited(lambda a: a.update(metadata=np.array("[1, 2]"))), "JSON object"),
    "metadata an int array": (lambda: _edited(lambda a: a.update(metadata=np.array(5))), "JSON string"),
    "metadata device int": (lambda: _edited_metadata(lambda m: m.update(device=0)), "'device' must be a str"),
    "metadata versions list": (lambda: _edited_metadata(lambda m: m.update(versions=[])), "'versions' must be a dict"),
    "metadata weights string": (lambda: _edited_metadata(lambda m: m.update(weights={"recognizer": "x"})),
                                "weights 'recognizer'"),
    "metadata without contract": (lambda: _edited_metadata(lambda m: m.pop("contract")), "no 'contract'"),
    "contract use_det string": (lambda: _edited_metadata(lambda m: m["contract"].update(use_det="false")),
                                "'use_det' must be true or false"),
    "contract max_faces 0": (lambda: _edited_metadata(lambda m: m["contract"].update(max_faces=0)), "max_faces"),
    "contract edited": (lambda: _edited_metadata(lambda m: m["contract"].update(max_faces=None)),
                        "contract_sha256 does not match"),
    "scores missing": (lambda: _edited(lambda a: a.pop("scores")), "['scores'] are missing"),
    "embeddings shape": (lambda: _edited(lambda a: a.update(embeddings=a["embeddings"][:, :128])), "'embeddings'"),
    "boxes float64": (lambda: _edited(lambda a: a.update(boxes=a["boxes"].astype(np.float64))),
                      "'boxes' must be float32"),
    "face_counts float": (lambda: _edited(lambda a: a.update(face_counts=a["face_counts"].astype(np.float32))),
                          "'face_counts'"),
    "images 2-D": (lambda: _edited(lambda a: a.update(images=a["images"][:, None])), "'images' must be a 1-D"),
    "image path escapes": (lambda: _edited(_set("images", 0, "../../x.jpg")), "not a relative path"),
    "sha256 not hex": (lambda: _edited(_set("image_sha256", 0, "nothex")), "64 lowercase hex"),
    "no images": (lambda: _edited(_no_images), "names no images"),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_reference_is_a_one_line_usage_error(model_dir, images, tmp_path, capsys, case):
    """Before: tracebacks (empty, truncated, metadata list/int/missing contract, device int), "pickled data" for a
    text file, or a PASS (float64 boxes, float counts, edited contract, use_det "false", no images at all)."""
    make, words = MALFORMED[case]
    content, path = make(), tmp_path / "ref.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        _write_npz(path, content)
    with pytest.raises(ReferenceError, match="not a readable `facemask regress` reference"):
        load_reference(path)
    assert _check(model_dir, images, reference=path) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err + captured.out and len(err.splitlines()) == 1, err
    assert str(path) in err and words in err and "pickled data" not in err.replace("pickled object arrays", "")


def _failures(report_path: Path) -> set[tuple[str, str]]:
    text = report_path.read_text()
    report = json.loads(text, parse_constant=lambda c: pytest.fail(f"report holds {c}"))  # strict JSON
    return {(f["image"], f["field"]) for f in report["failures"]}


def test_non_finite_reference_values_are_failures(model_dir, images, tmp_path, capsys):
    """Before: NaN boxes or scores passed (exit 0), NaN landmarks crashed (SVD did not converge)."""
    names = list(load_reference(REFERENCE).images)
    arrays = _reference_arrays()
    arrays["boxes"][0, 2] = np.nan
    arrays["scores"][1] = np.nan
    arrays["landmarks"][2, 3] = np.nan
    arrays["embeddings"][3, 7] = np.inf
    arrays["scores"][4] = -np.inf
    path = _write_npz(tmp_path / "nan.npz", arrays)
    assert _check(model_dir, images, "--json-out", str(tmp_path / "report.json"), reference=path) == 1
    out = capsys.readouterr().out
    assert "Traceback" not in out and "REGRESSION: 5 of 6 images out of tolerance" in out
    assert f"{names[0]} face 0 boxes: reference NaN, current output finite" in out
    assert f"{names[3]} face 0 embedding: reference Inf, current output finite" in out
    assert _failures(tmp_path / "report.json") == {
        (names[0], "boxes"), (names[0], "recognizer"), (names[1], "scores"), (names[2], "landmarks"),
        (names[2], "recognizer"),
        (names[3], "embedding"), (names[3], "recognizer"), (names[4], "scores")}


def test_non_finite_current_outputs_are_failures(model_dir, images, tmp_path, capsys, monkeypatch):
    """NaN/Inf in what the pipeline returns now fails that image and field, even with tolerances of 1.0."""
    from modelscope_facemask import FaceMaskPipeline

    names = list(load_reference(REFERENCE).images)
    poison = {names[0]: ("boxes", np.nan), names[1]: ("scores", np.inf), names[2]: ("keypoints", np.nan),
              names[3]: ("img_embedding", np.nan)}
    original = FaceMaskPipeline.run_batch

    def poisoned(self, inputs, **kwargs):
        outputs = original(self, inputs, **kwargs)
        for source, out in zip(inputs, outputs):
            if Path(source).name in poison:
                key, value = poison[Path(source).name]
                out[key] = out[key].copy()
                out[key].flat[0] = value
        return outputs

    monkeypatch.setattr(FaceMaskPipeline, "run_batch", poisoned)
    loose = ["--min-cos", "-1", "--max-landmark-px", "1e9", "--max-box-px", "1e9", "--max-score-diff", "1e9"]
    assert _check(model_dir, images, *loose, "--json-out", str(tmp_path / "report.json")) == 1
    out = capsys.readouterr().out
    assert f"{names[1]} face 0 scores: reference finite, current output Inf" in out
    assert _failures(tmp_path / "report.json") == {(names[0], "boxes"), (names[1], "scores"),
                                                   (names[2], "landmarks"), (names[3], "embedding")}


@pytest.fixture(scope="module")
def no_detection_model(model_dir, tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("use-det-false") / "model"
    linked_copy(model_dir, copy)
    config = json.loads((copy / "configuration.json").read_text())
    config["preprocessor"]["use_det"] = False
    (copy / "configuration.json").write_text(json.dumps(config))
    return copy


def test_use_det_false_reference_records_nan_and_checks_both_nan(no_detection_model, images, tmp_path, capsys):
    """use_det=False legitimately has NaN scores/landmarks: recorded as NaN, matched when both are NaN; a finite
    value on either side (or NaN boxes/embeddings) is a failure."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("person_a_1.jpg", "impostor_1.jpg"):
        shutil.copy(images / name, folder / name)
    ref = tmp_path / "ref.npz"
    assert main(["regress", "create", "--model", str(no_detection_model), "--images", str(folder), "--out", str(ref),
                 "--device", "cpu"]) == 0
    reference = load_reference(ref)
    assert reference.metadata["contract"]["use_det"] is False
    assert np.isnan(reference.scores).all() and np.isnan(reference.landmarks).all()
    assert np.isfinite(reference.boxes).all() and np.isfinite(reference.embeddings).all()
    check = ["regress", "check", "--model", str(no_detection_model), "--device", "cpu", "--json-out",
             str(tmp_path / "report.json"), "--overwrite"]  # the second check replaces the first report
    assert main([*check, "--reference", str(ref)]) == 0
    assert "PASS: 2 images" in capsys.readouterr().out
    arrays = {k: v for k, v in np.load(ref).items()}
    arrays["scores"][0] = 0.5  # a finite score where nothing was detected
    arrays["landmarks"][1, 0] = 3.0  # partly NaN
    bad = _write_npz(tmp_path / "bad.npz", arrays)
    assert main([*check, "--reference", str(bad)]) == 1
    assert _failures(tmp_path / "report.json") == {("impostor_1.jpg", "scores"), ("person_a_1.jpg", "landmarks")}
    assert "impostor_1.jpg face 0 scores: reference finite, current output NaN" in capsys.readouterr().out


def test_create_refuses_non_finite_outputs_and_writes_atomically(model_dir, images, tmp_path, capsys, monkeypatch):
    """`regress create` never records NaN/Inf (the file is not written, an existing one is kept), and writes
    through a temporary sibling (no partial file, no leftovers)."""
    from modelscope_facemask import FaceMaskPipeline

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("person_a_1.jpg", "impostor_1.jpg"):
        shutil.copy(images / name, folder / name)
    out_dir = tmp_path / "out"
    ref = out_dir / "ref.npz"
    create = ["regress", "create", "--model", str(model_dir), "--images", str(folder), "--out", str(ref),
              "--device", "cpu", "--force"]
    assert main(create) == 0
    good = ref.read_bytes()
    assert sorted(p.name for p in out_dir.iterdir()) == ["ref.npz"]
    original = FaceMaskPipeline.run_batch
    for key in ("img_embedding", "boxes", "scores", "keypoints"):
        def poisoned(self, inputs, key=key, **kwargs):
            outputs = original(self, inputs, **kwargs)
            outputs[1][key] = outputs[1][key].copy()
            outputs[1][key].flat[-1] = np.nan
            return outputs

        monkeypatch.setattr(FaceMaskPipeline, "run_batch", poisoned)
        assert main(create) == 2
        err = capsys.readouterr().err
        field = {"img_embedding": "embedding", "keypoints": "landmarks"}.get(key, key)
        assert f"refusing to record non-finite values (NaN or Inf): person_a_1.jpg face 0 {field}: NaN" in err
        assert ref.read_bytes() == good and sorted(p.name for p in out_dir.iterdir()) == ["ref.npz"]


# ---------------------------------------------------------------------- dependency upgrades
def _moved_reference(tmp_path: Path, one_minus_cos: float, versions: dict[str, str]) -> Path:
    """The committed reference with every embedding turned by ``one_minus_cos`` (as a dependency upgrade moves
    them) and ``versions`` recorded instead of the reference's."""
    arrays = _reference_arrays()
    ref = arrays["embeddings"].astype(np.float64)
    other = np.roll(ref, 1, axis=1)
    other -= (other * ref).sum(axis=1, keepdims=True) * ref
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    cos = 1.0 - one_minus_cos
    arrays["embeddings"] = (cos * ref + np.sqrt(1.0 - cos * cos) * other).astype(np.float32)
    meta = json.loads(str(arrays["metadata"]))
    meta["versions"].update(versions)
    arrays["metadata"] = np.array(json.dumps(meta))
    return _write_npz(tmp_path / "moved.npz", arrays)


def test_dependency_change_is_its_own_finding(model_dir, images, tmp_path, capsys):
    """OpenCV 5.0.0 -> 5.1.0 moved the recognizer by 1-cos 5.2e-7 (> the same-version 1e-9) and failed CI as a
    regression; with other versions recorded, the same weights and contract, a move within the measured envelope
    of dependency upgrades is reported as a dependency change (exit 3), never as a pass."""
    import cv2

    moved = _moved_reference(tmp_path, 1e-5, {"opencv": "0.0.0-test"})
    assert _check(model_dir, images, "--json-out", str(tmp_path / "report.json"), reference=moved) == 3
    out = capsys.readouterr().out
    assert f"DEPENDENCY CHANGE: 6 of 6 images moved beyond the same-version limits" in out, out
    assert f"opencv 0.0.0-test -> {cv2.__version__}" in out and "REGRESSION" not in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "dependency-change" and report["failures"] == []
    assert report["dependency_changes"] == [f"opencv 0.0.0-test -> {cv2.__version__}"]
    assert {f["field"] for f in report["moved"]} == {"embedding", "recognizer"} and len(report["moved"]) == 12


def test_same_move_without_a_dependency_change_is_a_regression(model_dir, images, tmp_path, capsys):
    moved = _moved_reference(tmp_path, 1e-5, {})
    assert _check(model_dir, images, reference=moved) == 1
    out = capsys.readouterr().out
    assert "REGRESSION: 6 of 6 images out of tolerance" in out and "DEPENDENCY CHANGE" not in out


def test_larger_move_than_upgrades_cause_is_a_regression(model_dir, images, tmp_path, capsys):
    moved = _moved_reference(tmp_path, 1e-3, {"opencv": "0.0.0-test"})
    assert _check(model_dir, images, reference=moved) == 1
    out = capsys.readouterr().out
    assert "REGRESSION: 6 of 6 images" in out and "moved more than such upgrades were measured to move them" in out


def test_weight_change_with_a_dependency_change_is_still_a_regression(model_dir, images, tmp_path, capsys):
    """A perturbed weight is caught even when a dependency changed too: the finding needs the reference's weights."""
    moved = _moved_reference(tmp_path, 1e-5, {"opencv": "0.0.0-test"})
    perturbed = _perturbed(model_dir, tmp_path, TORCH_WEIGHTS, "body.4.res_layer.3.weight", lambda t: t * 1.001)
    assert _check(perturbed, images, reference=moved) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "warning: recognizer weights differ" in out


def test_ci_installs_the_reference_versions():
    """The README's test command and .ci/run install with constraints.txt, which pins the numeric dependencies to the
    versions the committed reference was made with (so a fresh clone passes whatever PyPI holds that day)."""
    meta = load_reference(REFERENCE).metadata["versions"]
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert pins["opencv-python-headless"].startswith(meta["opencv"] + ".")
    assert pins["torch"] == meta["torch"].split("+")[0] and pins["numpy"] == meta["numpy"]
    assert pins["modelscope"] == meta["modelscope"]
    command = 'python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e ".[test]"'
    assert command in (ROOT / "README.md").read_text() and command in (ROOT / ".ci" / "run").read_text()
