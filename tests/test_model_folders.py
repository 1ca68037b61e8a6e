"""Clear errors for model folders: broken configuration.json (through ModelScope's pipeline() and every direct
constructor), local paths that do not exist (never sent to the hub), detectors that leave their repository."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from modelscope_facemask.modelscope_adapters.builder_guards import check_local_configuration
from modelscope_facemask.modelscope_adapters.configuration import read_configuration, resolve_detector_dir
from modelscope_facemask.errors import ConfigurationError, ModelSourceError
from modelscope_facemask.model_files.model_folders import is_hub_id, local_model_dir
from modelscope_facemask.tools.hub.repository_writers import OFFICIAL_MINIMAL_CONFIGURATION, write_json
from modelscope_facemask.testing.hub_emulator import HubEmulator, hub_environment, reset_hub_config

from .fixture_data import linked_copy

OFFICIAL = json.dumps(OFFICIAL_MINIMAL_CONFIGURATION)


def _with(**sections: object) -> str:
    return json.dumps({**OFFICIAL_MINIMAL_CONFIGURATION, **sections})


BROKEN = {  # name: (configuration.json bytes, words the message must contain)
    "not_json": (b'{"framework": "pytorch",', "is not valid JSON"),
    "empty_file": (b"", "is not valid JSON"),
    "json_list": (b"[1, 2]", "must hold a JSON object"),
    "json_string": (b'"x"', "must hold a JSON object"),
    "not_utf8": (b'\xff\xfe{"a": 1}', "is not UTF-8"),
    "pipeline_list": (json.dumps({"pipeline": []}).encode(), '"pipeline" must be a JSON object'),
    "preprocessor_list": (_with(preprocessor=[]).encode(), '"preprocessor" must be a JSON object'),
    "model_string": (_with(model="x").encode(), '"model" must be a JSON object'),
    "backbone_list": (_with(model={"type": "facemask", "backbone": [6]}).encode(), "model.backbone must be"),
    "units_number": (_with(model={"backbone": {"units": 5}}).encode(), "model.backbone.units"),
    "units_bools": (_with(model={"backbone": {"units": [True, 1, 1, 1]}}).encode(), "model.backbone.units"),
    "detector_number": (_with(preprocessor={"detector": 5}).encode(), "preprocessor.detector"),
    "detector_null": (_with(preprocessor={"detector": None}).encode(), "preprocessor.detector"),
    "max_faces_zero": (_with(preprocessor={"max_faces": 0}).encode(), "preprocessor.max_faces"),
    "use_det_string": (_with(preprocessor={"use_det": "false"}).encode(), "preprocessor.use_det"),
    "min_face_size_nan": (_with(preprocessor={"min_face_size": float("nan")}).encode(), "preprocessor.min_face_size"),
    "detector_escapes": (_with(preprocessor={"detector": "../../.."}).encode(), "outside the model repository"),
    "detector_absolute": (_with(preprocessor={"detector": "/etc"}).encode(), "outside the model repository"),
    "detector_home": (_with(preprocessor={"detector": "~/retinaface"}).encode(), "outside the model repository"),
    "detector_windows_drive": (_with(preprocessor={"detector": "C:\\models\\det"}).encode(), "outside the model"),
    "facemask_without_pipeline_type": (json.dumps({"model": {"type": "facemask"}}).encode(), "has no pipeline.type"),
}


def _folder(tmp_path: Path, raw: bytes) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "configuration.json").write_bytes(raw)
    return folder


def _constructors():
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    from modelscope_facemask.modelscope_adapters.model import FaceMaskModel
    from modelscope_facemask.modelscope_adapters.pipeline import FaceMaskPipeline
    from modelscope_facemask.modelscope_adapters.preprocessor import FaceMaskPreprocessor

    return {
        "modelscope_pipeline": lambda d: pipeline(Tasks.face_recognition, d, device="cpu"),
        "FaceMaskPipeline": lambda d: FaceMaskPipeline(d, device="cpu"),
        "FaceMaskModel.from_pretrained": lambda d: FaceMaskModel.from_pretrained(d, device="cpu"),
        "FaceMaskPreprocessor": lambda d: FaceMaskPreprocessor(d, device="cpu"),
    }


CONSTRUCTORS = ("modelscope_pipeline", "FaceMaskPipeline", "FaceMaskModel.from_pretrained", "FaceMaskPreprocessor")


@pytest.mark.parametrize("case,constructor", [
    (case, constructor) for case in sorted(BROKEN) for constructor in CONSTRUCTORS
    if case != "facemask_without_pipeline_type" or constructor == "modelscope_pipeline"  # only pipeline() needs it
])
def test_broken_configuration_is_named(case, constructor, tmp_path):
    raw, words = BROKEN[case]
    folder = _folder(tmp_path, raw)
    with pytest.raises(ConfigurationError) as caught:
        _constructors()[constructor](str(folder))
    assert str(folder / "configuration.json") in str(caught.value) and words in str(caught.value)


def test_guard_leaves_other_tasks_alone(tmp_path):
    """Only what ModelScope itself cannot read is refused for configurations that are not FaceMask ones."""
    other = {"framework": "pytorch", "task": "image-classification", "pipeline": {"type": "some-classifier"},
             "model": "legacy-string", "preprocessor": ["whatever"]}
    write_json(tmp_path / "configuration.json", other)
    check_local_configuration(tmp_path)  # no exception
    check_local_configuration(tmp_path / "no-such-folder")  # ModelScope decides
    (tmp_path / "configuration.json").write_text(json.dumps({**other, "pipeline": "x"}))
    with pytest.raises(ConfigurationError, match='"pipeline" must be a JSON object'):
        check_local_configuration(tmp_path)


def test_guards_are_installed_once():
    import modelscope.pipelines.builder as builder

    from modelscope_facemask.modelscope_adapters import builder_guards

    before = (builder.read_config, builder.is_official_hub_path, builder.is_model_from_trusted_source)
    builder_guards.install()
    assert (builder.read_config, builder.is_official_hub_path, builder.is_model_from_trusted_source) == before
    assert getattr(builder.read_config, "_facemask_guard") and getattr(builder.is_official_hub_path, "_facemask_guard")


# ------------------------------------------------------------------------------------------- paths and hub ids
@pytest.fixture
def hub(tmp_path, monkeypatch):
    with HubEmulator(tmp_path / "hub-root") as emulator:
        for key, value in hub_environment(emulator, tmp_path / "ms-cache", tmp_path / "ms-home").items():
            monkeypatch.setenv(key, value)
        reset_hub_config()
        yield emulator
    reset_hub_config()


MISSING_PATHS = ["./models/facemask", "/tmp/facemask-no-such-folder", "~/facemask-no-such-folder", "C:\\x", "a/b/c",
                 "../facemask-missing", "models\\facemask"]


@pytest.mark.parametrize("path", MISSING_PATHS)
def test_missing_local_path_is_a_missing_folder_without_hub_calls(path, hub):
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    from modelscope_facemask.modelscope_adapters.model import FaceMaskModel

    for call in (lambda: local_model_dir(path), lambda: FaceMaskModel.from_pretrained(path, device="cpu"),
                 lambda: pipeline(Tasks.face_recognition, path, device="cpu")):
        started = time.monotonic()
        with pytest.raises(ModelSourceError, match=r"does not exist") as caught:
            call()
        assert repr(path) in str(caught.value) and "owner/name" in str(caught.value)
        assert time.monotonic() - started < 2
    assert hub.requests == []  # never tried as a hub id


def test_hub_id_shape():
    assert is_hub_id("damo/cv_resnet_face-recognition_facemask") and is_hub_id("owner/name.v2")
    for text in MISSING_PATHS + ["owner/", "/name", "owner/..", "o/../n", "owner name/x", ""]:
        assert not is_hub_id(text), text


def test_owner_name_is_a_folder_when_it_exists_else_a_hub_id(hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "facemask").mkdir(parents=True)
    assert local_model_dir("models/facemask") == "models/facemask"
    assert hub.requests == []
    with pytest.raises(ModelSourceError, match=r"'models/other' does not exist on the ModelScope hub"):
        local_model_dir("models/other")
    assert [r.path for r in hub.requests] == ["/api/v1/models/models/other/repo/files"]


def test_a_file_is_not_a_model_folder(tmp_path):
    (tmp_path / "configuration.json").write_text(OFFICIAL)
    with pytest.raises(ModelSourceError, match="is a file, not a model folder"):
        local_model_dir(tmp_path / "configuration.json")


def test_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "snap").mkdir()
    assert local_model_dir("~/snap") == str(tmp_path / "snap")


# ------------------------------------------------------------------------------------- detector containment
def _detector_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    write_json(folder / "configuration.json", {"task": "face-detection"})
    return folder


def _repo(tmp_path: Path, detector: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    write_json(repo / "configuration.json", {**OFFICIAL_MINIMAL_CONFIGURATION, "preprocessor": {"detector": detector}})
    return repo


def test_detector_inside_the_repository_is_used(tmp_path):
    repo = _repo(tmp_path, "detector")
    _detector_folder(repo / "detector")
    assert resolve_detector_dir("detector", repo) == repo / "detector"


def test_configured_detector_may_not_escape_through_a_symlink(tmp_path):
    outside = _detector_folder(tmp_path / "elsewhere")
    repo = _repo(tmp_path, "detector")
    os.symlink(outside, repo / "detector")
    with pytest.raises(ConfigurationError, match="outside the model repository"):
        resolve_detector_dir("detector", repo)


def test_configured_detector_is_not_looked_up_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _detector_folder(tmp_path / "cwd-detector")
    repo = _repo(tmp_path, "cwd-detector")
    with pytest.raises(ConfigurationError, match="neither a folder inside"):
        resolve_detector_dir("cwd-detector", repo)
    # the same folder named by the caller is fine
    assert resolve_detector_dir("cwd-detector", repo, from_configuration=False) == Path("cwd-detector")


def test_detector_given_by_the_caller_may_be_any_local_folder(tmp_path, monkeypatch):
    outside = _detector_folder(tmp_path / "elsewhere")
    repo = _repo(tmp_path, "detector")
    assert resolve_detector_dir(str(outside), repo) == outside
    monkeypatch.chdir(repo)  # a relative folder given by the caller is relative to the working directory
    assert resolve_detector_dir("../elsewhere", repo, from_configuration=False) == Path("../elsewhere")
    with pytest.raises(ConfigurationError, match="outside the model repository"):
        resolve_detector_dir("../elsewhere", repo, from_configuration=True)


def test_escaping_detector_is_refused_when_the_configuration_is_read(tmp_path):
    repo = _repo(tmp_path, "../../..")
    with pytest.raises(ConfigurationError, match=r"configuration\.json.*outside the model repository"):
        read_configuration(repo)


# ------------------------------------------------------------------------ files read must be the files listed
@pytest.fixture
def listed_copy(tmp_path, small_model_dir) -> Path:
    """A copy of the small model with a manifest.json listing its files, as `facemask pack` writes one."""
    from modelscope_facemask.model_files.manifest import write_manifest

    folder = linked_copy(small_model_dir, tmp_path / "listed")  # weights hard-linked: tests add files, never write
    write_manifest(folder)
    return folder


@pytest.mark.parametrize("network", ["recognizer", "detector"])
def test_weights_the_manifest_does_not_list_are_never_loaded(listed_copy, network):
    """A model.safetensors added beside the listed pytorch_model.pt (the loader prefers safetensors) is refused,
    naming the file and the fix, instead of being loaded unchecked."""
    from modelscope_facemask import FaceMaskPipeline
    from modelscope_facemask.model_files.checkpoints import SAFETENSORS_WEIGHTS, TORCH_WEIGHTS, read_state_dict, save_state_dict
    from modelscope_facemask.errors import CheckpointError

    folder = listed_copy / ("detector" if network == "detector" else "")
    stray = folder / SAFETENSORS_WEIGHTS
    save_state_dict(read_state_dict(folder / TORCH_WEIGHTS), stray)
    with pytest.raises(CheckpointError) as info:
        FaceMaskPipeline(str(listed_copy), device="cpu")
    message = str(info.value)
    assert f"{str(stray)!r} is not listed in {str(listed_copy / 'manifest.json')!r}" in message
    assert "pack the model again" in message


def test_detector_folder_the_manifest_does_not_list_is_refused(listed_copy):
    """A detector folder added to a packed repository after packing: its configuration.json is read first."""
    from modelscope_facemask import FaceMaskPipeline
    from modelscope_facemask.errors import CheckpointError
    from modelscope_facemask.model_files.manifest import write_manifest

    shutil.move(listed_copy / "detector", listed_copy.parent / "detector")
    write_manifest(listed_copy)  # lists the recognizer only
    shutil.move(listed_copy.parent / "detector", listed_copy / "detector")
    with pytest.raises(CheckpointError, match=r"detector/configuration\.json' is not listed in"):
        FaceMaskPipeline(str(listed_copy), device="cpu")
