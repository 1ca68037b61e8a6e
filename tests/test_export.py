"""``facemask export`` and the engines' graph cache: manifest, dynamic batch and image size, exported folders used
as given, cache reuse, corrupt caches, concurrent first use, and the ``--out`` replacement rules.

The exported graphs are checked with ONNX Runtime / OpenVINO called directly (not through this package's engine
classes) against the torch modules loaded independently from the weights files. Raw network outputs, measured
2026-11-30 on the 2-core CPU: within 3e-5 of torch's (bound 3e-4).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import pytest
import torch
from PIL import Image

from modelscope_facemask import FaceMaskPipeline
from modelscope_facemask.model_files.checkpoints import read_state_dict
from modelscope_facemask.cli import main
from modelscope_facemask.engines import export_cache
from modelscope_facemask.engines.export_cache import cached_graph
from modelscope_facemask.errors import CheckpointError, ConfigurationError
from modelscope_facemask.faces.detector import DetectionSettings, network_planes
from modelscope_facemask.nets.iresnet import IResNet
from modelscope_facemask.nets.retinaface import MOBILENET025_CONFIG, RetinaFace
from modelscope_facemask.version import __version__

from .fixture_data import SMALL_UNITS, linked_copy

RAW_ABS = 3e-4
FILES = {"onnx": ["detector.onnx", "manifest.json", "recognizer.onnx"],
         "openvino": ["detector.bin", "detector.xml", "manifest.json", "recognizer.bin", "recognizer.xml"]}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def listing(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def exported(small_model_dir, tmp_path_factory, shared_files):
    """``facemask export`` of the small model in both formats: {format: (folder, exit code, stdout)}. Read only: the
    graphs are kept once on disk (the engine cache of test_engines.py holds the same bytes)."""
    root = tmp_path_factory.mktemp("exported")
    result = {fmt: (root / fmt, *run_cli("export", "--format", fmt, "--model", str(small_model_dir), "--out",
                                         str(root / fmt))[:2]) for fmt in ("onnx", "openvino")}
    shared_files.share(root)
    return result


@pytest.fixture(scope="module")
def torch_nets(small_model_dir):
    """The recognizer and the detector loaded here from the weights files with plain torch."""
    recognizer = IResNet(SMALL_UNITS)
    recognizer.load_state_dict(read_state_dict(small_model_dir / "pytorch_model.pt"))
    detector = RetinaFace(MOBILENET025_CONFIG)
    detector.load_state_dict(read_state_dict(small_model_dir / "detector" / "pytorch_model.pt"))
    return recognizer.eval(), detector.eval()


@pytest.fixture
def engine_cache(tmp_path, monkeypatch):
    folder = tmp_path / "engine_cache"
    monkeypatch.setenv("FACEMASK_ENGINE_CACHE", str(folder))
    return folder


@pytest.fixture
def export_calls(monkeypatch):
    """Every export the cache makes, as (kind, format)."""
    calls: list[tuple[str, str]] = []
    real = export_cache.export_network

    def counting(net, kind, fmt, folder):
        calls.append((kind, fmt))
        return real(net, kind, fmt, folder)

    monkeypatch.setattr(export_cache, "export_network", counting)
    return calls


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_export_writes_both_graphs_and_a_manifest(exported, small_model_dir, fmt):
    folder, code, stdout = exported[fmt]
    assert code == 0
    assert sorted(p.name for p in folder.iterdir()) == FILES[fmt]
    assert f"exported {small_model_dir} -> {folder} ({fmt})" in stdout
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["generator"] == f"modelscope-facemask {__version__}" and manifest["output"] == "export"
    assert manifest["graph_format"] == fmt and manifest["opset"] == 17
    assert set(manifest["files"]) == set(FILES[fmt]) - {"manifest.json"}
    for name, entry in manifest["files"].items():
        assert entry == {"sha256": sha256(folder / name), "size": (folder / name).stat().st_size}
        assert f"{entry['size']:>13,}  {name}" in stdout
    assert manifest["source_weights_sha256"] == {
        "recognizer": sha256(small_model_dir / "pytorch_model.pt"),
        "detector": sha256(small_model_dir / "detector" / "pytorch_model.pt")}
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["versions"]["onnxruntime"] == ort.__version__
    if fmt == "onnx":
        for name in ("recognizer.onnx", "detector.onnx"):
            assert [o.version for o in onnx.load(folder / name).opset_import if o.domain in ("", "ai.onnx")] == [17]


def _symbolic_dims(graph_input) -> list[bool]:
    return [bool(d.dim_param) for d in graph_input.type.tensor_type.shape.dim]


def test_onnx_graphs_have_dynamic_batch_and_image_size(exported, torch_nets, portraits):
    folder = exported["onnx"][0]
    recognizer = onnx.load(folder / "recognizer.onnx")
    detector = onnx.load(folder / "detector.onnx")
    assert _symbolic_dims(recognizer.graph.input[0]) == [True, False, False, False]
    assert _symbolic_dims(detector.graph.input[0]) == [True, False, True, True]
    rec_session = ort.InferenceSession(str(folder / "recognizer.onnx"), providers=["CPUExecutionProvider"])
    det_session = ort.InferenceSession(str(folder / "detector.onnx"), providers=["CPUExecutionProvider"])
    _check_runs(lambda x: rec_session.run(None, {"input": x}), lambda x: det_session.run(None, {"input": x}),
                torch_nets, portraits)


def test_openvino_graphs_have_dynamic_batch_and_image_size(exported, torch_nets, portraits):
    folder = exported["openvino"][0]
    core = ov.Core()
    recognizer = core.compile_model(str(folder / "recognizer.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    detector = core.compile_model(str(folder / "detector.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert recognizer.inputs[0].get_partial_shape().to_string() == "[?,3,112,112]"
    assert detector.inputs[0].get_partial_shape().to_string() == "[?,3,?,?]"
    # the weights stayed fp32 (OpenVINO's save_model would compress them to fp16 by default): about 4 bytes per
    # parameter (BatchNorm folded into the convolutions removes a few), fp16 would be 2
    assert (folder / "recognizer.bin").stat().st_size > 3.9 * sum(p.numel() for p in torch_nets[0].parameters())
    _check_runs(lambda x: [recognizer(x)[o] for o in recognizer.outputs],
                lambda x: [detector(x)[o] for o in detector.outputs], torch_nets, portraits)


def _check_runs(run_recognizer, run_detector, torch_nets, portraits) -> None:
    """Batch 1 and 3, and two image sizes, against the torch modules."""
    recognizer, detector = torch_nets
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in list(portraits.values())[:3]]
    crops = np.stack([np.asarray(Image.fromarray(p).resize((112, 112))) for p in photos])
    crops = ((crops / 255.0 - 0.5) / 0.5).astype(np.float32).transpose(0, 3, 1, 2).copy()
    for batch in (crops[:1], crops):
        with torch.no_grad():
            expected = recognizer(torch.from_numpy(batch)).numpy()
        got = run_recognizer(batch)[0]
        assert got.shape == expected.shape and np.abs(got - expected).max() <= RAW_ABS
    for height, width in ((240, 320), (300, 417)):
        planes = np.stack([network_planes(np.asarray(Image.fromarray(p).resize((width, height))), DetectionSettings(),
                                          "BGR")[0] for p in photos])
        for batch in (planes[:1], planes):
            with torch.no_grad():
                expected = [t.numpy() for t in detector(torch.from_numpy(batch))]
            got = run_detector(batch)
            assert [g.shape for g in got] == [e.shape for e in expected]
            assert max(float(np.abs(g - e).max()) for g, e in zip(got, expected)) <= RAW_ABS


def test_pipeline_runs_an_exported_folder_without_exporting(exported, small_model_dir, portraits, engine_cache,
                                                            export_calls, caplog):
    photo = str(next(iter(portraits.values())))
    reference = FaceMaskPipeline(str(small_model_dir), device="cpu")(photo)
    for engine, fmt in (("onnxruntime", "onnx"), ("openvino", "openvino"), ("openvino", "onnx")):
        folder = exported[fmt][0]
        with caplog.at_level(logging.INFO, logger="modelscope.facemask"):
            out = FaceMaskPipeline(str(small_model_dir), device="cpu", engine=engine, engine_dir=str(folder))(photo)
        np.testing.assert_allclose(out["boxes"], reference["boxes"], rtol=0, atol=0.01)
        assert np.abs(out["img_embedding"] - reference["img_embedding"]).max() < 5e-4
        graph = "recognizer.onnx" if fmt == "onnx" else "recognizer.xml"
        assert any(f"runs on {engine}" in r.getMessage() and f"{folder / graph} (exported folder)" in r.getMessage()
                   for r in caplog.records)
    assert export_calls == [] and not engine_cache.exists()


def test_exported_folder_problems_are_clear_errors(exported, small_model_dir, tmp_path):
    folder = tmp_path / "graphs"
    shutil.copytree(exported["onnx"][0], folder)
    before = listing(folder)
    with pytest.raises(ConfigurationError, match="holds openvino graphs, which onnxruntime cannot run"):
        FaceMaskPipeline(str(small_model_dir), device="cpu", engine="onnxruntime",
                         engine_dir=str(exported["openvino"][0]))
    with (folder / "recognizer.onnx").open("r+b") as fh:
        fh.seek(100)
        fh.write(b"\0" * 8)
    with pytest.raises(CheckpointError, match=r"'recognizer.onnx' does not match the sha256 in its manifest"):
        FaceMaskPipeline(str(small_model_dir), device="cpu", engine="onnxruntime", engine_dir=str(folder))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["source_weights_sha256"]["recognizer"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigurationError, match="recognizer graph was exported from other weights"):
        FaceMaskPipeline(str(small_model_dir), device="cpu", engine="onnxruntime", engine_dir=str(folder))
    assert set(listing(folder)) == set(before)  # nothing written into the user's folder
    with pytest.raises(ConfigurationError, match="has no manifest.json"):
        FaceMaskPipeline(str(small_model_dir), device="cpu", engine="onnxruntime", engine_dir=str(tmp_path))


def test_cache_is_filled_once_and_reused(small_model_dir, portraits, engine_cache, export_calls, caplog):
    photo = str(next(iter(portraits.values())))
    with caplog.at_level(logging.INFO, logger="modelscope.facemask"):
        first = FaceMaskPipeline(str(small_model_dir), device="cpu", engine="onnxruntime")(photo)
    assert sorted(export_calls) == [("detector", "onnx"), ("recognizer", "onnx")]
    folders = sorted(p.name for p in engine_cache.iterdir())
    weights = sha256(small_model_dir / "pytorch_model.pt")
    assert len(folders) == 2 and any(f.startswith(f"recognizer-{weights[:24]}-onnx-fp32-") for f in folders)
    assert sum("(fresh export)" in r.getMessage() for r in caplog.records) == 2
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="modelscope.facemask"):
        second = FaceMaskPipeline(str(small_model_dir), device="cpu", engine="onnxruntime")(photo)
    assert len(export_calls) == 2  # no new export
    assert sum("(cache hit)" in r.getMessage() for r in caplog.records) == 2
    assert sorted(p.name for p in engine_cache.iterdir()) == folders
    np.testing.assert_array_equal(first["img_embedding"], second["img_embedding"])


def test_corrupt_cached_graph_is_exported_again(small_model_dir, portraits, engine_cache, export_calls, caplog):
    photo = str(next(iter(portraits.values())))
    first = FaceMaskPipeline(str(small_model_dir), device="cpu", engine="onnxruntime")(photo)
    graph = next(engine_cache.glob("recognizer-*/recognizer.onnx"))
    graph.write_bytes(graph.read_bytes()[:1000])  # truncated
    with caplog.at_level(logging.WARNING, logger="modelscope.facemask"):
        again = FaceMaskPipeline(str(small_model_dir), device="cpu", engine="onnxruntime")(photo)
    assert export_calls[2:] == [("recognizer", "onnx")]
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "unusable" in warning and "'recognizer.onnx' is 1000 bytes" in warning and "exporting it again" in warning
    manifest = json.loads((graph.parent / "manifest.json").read_text())
    assert manifest["files"]["recognizer.onnx"]["sha256"] == sha256(graph)
    np.testing.assert_array_equal(first["img_embedding"], again["img_embedding"])


def _onnx_embeddings(graph: Path, crops: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: crops})[0]


def test_cached_graph_of_other_weights_is_exported_again(torch_nets, small_model_dir, engine_cache, export_calls,
                                                         caplog):
    """A cache entry holding another network's graph with its own valid manifest, under this network's name, is
    not used (its manifest names other source weights): it is exported again from these weights."""
    from modelscope_facemask.engines.export_cache import cache_key, weights_sha256
    from modelscope_facemask.tools.demo.synthetic_weights import synthetic_recognizer

    recognizer = torch_nets[0]
    weights = sha256(small_model_dir / "pytorch_model.pt")
    other = synthetic_recognizer(SMALL_UNITS, seed=7).eval()
    other_graph, _ = cached_graph(other, "recognizer", "onnxruntime", weights_sha256(other))
    entry = engine_cache / cache_key("recognizer", weights, "onnx")
    shutil.copytree(other_graph.parent, entry)  # the other network's entry, files and manifest consistent
    crops = np.random.default_rng(0).uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32)
    with torch.no_grad():
        expected, others = recognizer(torch.from_numpy(crops)).numpy(), other(torch.from_numpy(crops)).numpy()
    assert np.abs(_onnx_embeddings(entry / "recognizer.onnx", crops) - expected).max() > 100 * RAW_ABS
    with caplog.at_level(logging.WARNING, logger="modelscope.facemask"):
        graph, how = cached_graph(recognizer, "recognizer", "onnxruntime", weights)
    assert (graph, how) == (entry / "recognizer.onnx", "fresh export")
    assert export_calls == [("recognizer", "onnx")] * 2
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "exported from other weights" in warning and "exporting it again" in warning
    assert json.loads((entry / "manifest.json").read_text())["source_weights_sha256"] == {"recognizer": weights}
    assert np.abs(_onnx_embeddings(graph, crops) - expected).max() <= RAW_ABS
    assert np.abs(others - expected).max() > 100 * RAW_ABS  # the two networks are told apart


@pytest.mark.parametrize("case", ["no manifest", "a file its manifest does not list"])
def test_cache_never_deletes_a_folder_it_did_not_write(torch_nets, small_model_dir, engine_cache, case):
    from modelscope_facemask.engines.export_cache import cache_key

    recognizer = torch_nets[0]
    weights = sha256(small_model_dir / "pytorch_model.pt")
    entry = engine_cache / cache_key("recognizer", weights, "onnx")
    if case == "no manifest":
        entry.mkdir(parents=True)
    else:
        graph, _ = cached_graph(recognizer, "recognizer", "onnxruntime", weights)
        graph.write_bytes(graph.read_bytes()[:1000])  # unusable, and
    (entry / "notes.txt").write_text("someone's notes")  # something this package never writes
    before = listing(entry)
    with pytest.raises(ConfigurationError, match=r"is unusable .* not a cache entry written by this package .* "
                                                 r"move it out of the cache, or set FACEMASK_ENGINE_CACHE"):
        cached_graph(recognizer, "recognizer", "onnxruntime", weights)
    assert listing(entry) == before


def test_concurrent_first_use_exports_into_one_folder(torch_nets, small_model_dir, engine_cache, monkeypatch):
    """Two users exporting the same graph at the same moment: both get the same complete folder."""
    real = export_cache.export_network
    barrier = threading.Barrier(2, timeout=120)

    def export_together(net, kind, fmt, folder):
        barrier.wait()  # both are inside their export, neither has renamed its folder yet
        return real(net, kind, fmt, folder)

    monkeypatch.setattr(export_cache, "export_network", export_together)
    recognizer = torch_nets[0]
    weights = sha256(small_model_dir / "pytorch_model.pt")
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(cached_graph(recognizer, "recognizer", "onnxruntime",
                                                                           weights)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0][0] == results[1][0]
    assert sorted(how for _, how in results) == ["cache hit", "fresh export"]
    assert [p.name for p in engine_cache.iterdir()] == [results[0][0].parent.name]  # no staging folder left
    session = ort.InferenceSession(str(results[0][0]), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "input"


def test_export_out_never_replaces_what_it_did_not_write(exported, small_model_dir, tmp_path):
    base = ["export", "--format", "onnx", "--model", str(small_model_dir), "--out"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for force in ([], ["--force"]):
        code, _, err = run_cli(*base, str(foreign), *force)
        assert code == 2 and "refusing to" in err and "manifest.json" in err
    assert listing(foreign) == {"notes.txt": sha256(foreign / "notes.txt")}
    earlier = linked_copy(exported["onnx"][0], tmp_path / "earlier")  # graphs hard-linked: replaced, never written
    code, _, err = run_cli(*base, str(earlier))
    assert code == 2 and "pass --force to replace it" in err
    (earlier / "extra.txt").write_text("x")
    before = listing(earlier)
    code, _, err = run_cli(*base, str(earlier), "--force")
    assert code == 2 and "'extra.txt'" in err and listing(earlier) == before
    (earlier / "extra.txt").unlink()
    code, _, _ = run_cli(*base, str(earlier), "--force")  # an unchanged earlier export: replaced
    assert code == 0 and sorted(p.name for p in earlier.iterdir()) == FILES["onnx"]
    assert not [p for p in tmp_path.iterdir() if ".facemask-tmp-" in p.name]
    packed = tmp_path / "packed"
    assert run_cli("pack", "--model", str(small_model_dir), "--out", str(packed))[0] == 0
    code, _, err = run_cli(*base, str(packed), "--force")
    assert code == 2 and "not `facemask export` output" in err
