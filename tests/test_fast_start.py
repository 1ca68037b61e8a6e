"""The first ten minutes: ``facemask --help``, ``facemask COMMAND --help`` and usage errors load no network library,
and ``import modelscope_facemask`` still registers the plugin with ModelScope in either import order.

Each check runs in a fresh interpreter (``sys.modules`` of this test process is full of torch already). What is
measured is what was imported, never how long it took.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

#: top-level packages a parse must not import (each costs 0.1-5 s and up to hundreds of MB)
HEAVY = ("torch", "modelscope", "cv2", "numpy", "onnxruntime", "openvino", "faiss", "ray", "pyarrow", "PIL",
         "skimage", "matplotlib", "requests", "fastapi", "starlette", "uvicorn", "pydantic", "prometheus_client",
         "python_multipart")

#: runs the command line in-process, then prints the exit code and the heavy packages that were imported
PARSE_ONLY = textwrap.dedent("""
    import contextlib, io, json, sys
    from modelscope_facemask.cli import main
    heavy = json.loads(sys.argv[1])
    report = []
    for argv in json.loads(sys.argv[2]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        loaded = sorted({name.split(".")[0] for name in sys.modules} & set(heavy))
        report.append({"argv": argv, "code": code, "loaded": loaded, "out": out.getvalue(), "err": err.getvalue()})
    print(json.dumps(report))
""")

COMMANDS = ("embed", "compare", "annotate", "evaluate", "env", "regress", "pack", "publish", "demo", "export",
            "quantize", "gallery", "identify", "serve")


def _python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env,
                          stdin=subprocess.DEVNULL)


def _imported(stderr: str) -> set[str]:
    """The top-level packages named in ``-X importtime`` output."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize("argv", [["-m", "modelscope_facemask.cli", "--help"],
                                  ["-m", "modelscope_facemask.cli", "compare", "--help"],
                                  ["-m", "modelscope_facemask.cli", "compare", "a.png", "b.png", "--threshold", "1.5"]],
                         ids=["help", "compare-help", "usage-error"])
def test_the_command_line_parses_without_network_libraries(argv):
    done = _python("-X", "importtime", *argv)
    imported = _imported(done.stderr)
    assert "modelscope_facemask" in imported, done.stderr[-2000:]  # -X importtime did report
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
    if "--threshold" in argv:
        assert done.returncode == 2
        message = [line for line in done.stderr.splitlines() if not line.startswith("import time:")][-1]
        assert message == ("facemask compare: error: argument --threshold: must be a number in [-1, 1] (cosine "
                           "similarity), got '1.5'")
    else:
        assert done.returncode == 0, done.stderr[-2000:]
        assert "usage: facemask" in done.stdout


def test_every_help_and_usage_errors_load_no_network_library():
    argvs = [["--help"], ["--version"], ["gallery", "build", "--help"], ["regress", "create", "--help"],
             ["compare", "a.png"], ["embed", "x", "--batch-size", "0"], ["identify", "x", "--gallery", "g",
                                                                           "--threshold", "nan"],
             ["regress", "create", "--max-faces", "zero"], ["nosuchcommand"]]
    argvs += [[command, "--help"] for command in COMMANDS]
    done = _python("-c", PARSE_ONLY, json.dumps(HEAVY), json.dumps(argvs))
    assert done.returncode == 0, done.stderr[-3000:]
    for run in json.loads(done.stdout):
        assert run["loaded"] == [], run["argv"]
        helping = "--help" in run["argv"] or "--version" in run["argv"]
        assert run["code"] == (0 if helping else 2), run
        if not helping:
            assert "error:" in run["err"].splitlines()[-1], run
    identify_help = next(r["out"] for r in json.loads(done.stdout) if r["argv"] == ["identify", "--help"])
    from modelscope_facemask.tools.gallery import DEFAULT_THRESHOLD

    assert f"{DEFAULT_THRESHOLD} is an UNCALIBRATED placeholder" in " ".join(identify_help.split())


def test_import_is_light_and_exports_the_classes_lazily():
    code = textwrap.dedent(f"""
        import sys
        import modelscope_facemask
        heavy = sorted({{n.split(".")[0] for n in sys.modules}} & set({list(HEAVY)!r}))
        assert heavy == [], heavy
        assert modelscope_facemask.__version__
        assert {{"FaceMaskModel", "FaceMaskPipeline", "FaceMaskPreprocessor"}} <= set(dir(modelscope_facemask))
        from modelscope_facemask import FaceMaskModel, FaceMaskPipeline, FaceMaskPreprocessor, __version__
        assert FaceMaskPipeline.__module__ == "modelscope_facemask.modelscope_adapters.pipeline"
        try:
            modelscope_facemask.NoSuchName
        except AttributeError:
            pass
        else:
            raise AssertionError("no AttributeError")
        print("ok")
    """)
    done = _python("-c", code)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


#: registered names, the built-in name's class, the lazy index and the builder guard, as ModelScope sees them
REGISTRY_CHECK = textwrap.dedent("""
    import sys
    from modelscope.models.builder import MODELS
    from modelscope.pipelines.builder import PIPELINES
    from modelscope.preprocessors.builder import PREPROCESSORS
    from modelscope.utils.import_utils import LazyImportModule
    from modelscope.utils.registry import build_from_cfg
    import modelscope.pipelines.builder as builder
    index = LazyImportModule.get_ast_index()["index"]
    assert index[("PIPELINES", "face-recognition", "resnet-face-recognition-facemask")]["module"] == \\
        "modelscope_facemask.modelscope_adapters.pipeline"
    assert getattr(builder.read_config, "_facemask_guard", False)
    assert not any(type(f).__name__ == "AfterImportHook" for f in sys.meta_path)  # one shot: gone once it ran
    # what pipeline()/Model.from_pretrained do: import the module behind a name through the index, then look it up
    for registry, group, name in (("PIPELINES", "face-recognition", "resnet-face-recognition-facemask"),
                                  ("MODELS", "face-recognition", "facemask"),
                                  ("PREPROCESSORS", "cv", "facemask-face-preprocessor")):
        LazyImportModule.import_module((registry, group, name))
    from modelscope_facemask import FaceMaskModel, FaceMaskPipeline, FaceMaskPreprocessor
    assert PIPELINES.get("resnet-face-recognition-facemask", group_key="face-recognition") is FaceMaskPipeline
    assert PIPELINES.get("facemask-face-recognition", group_key="face-recognition") is FaceMaskPipeline
    assert MODELS.get("facemask", group_key="face-recognition") is FaceMaskModel
    assert PREPROCESSORS.get("facemask-face-preprocessor", group_key="cv") is FaceMaskPreprocessor
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks
    from modelscope_facemask.errors import ModelSourceError
    try:
        pipeline(Tasks.face_recognition, "no-such-folder")  # the guard answers before any hub call
    except ModelSourceError as exc:
        assert "does not exist" in str(exc)
    else:
        raise AssertionError("no ModelSourceError")
    p = pipeline(Tasks.face_recognition, MODEL_DIR, device="cpu")  # configuration.json: the built-in name
    assert type(p) is FaceMaskPipeline, type(p)
    print("ok")
""")


@pytest.mark.parametrize("first", ["modelscope", "modelscope_facemask", "facemask_submodule"])
def test_registration_in_either_import_order(first, small_model_dir):
    """ModelScope imported before the plugin, after it, or first by one of the plugin's own modules."""
    lead = {"modelscope": "from modelscope.pipelines import pipeline\nimport modelscope_facemask\n",
            "modelscope_facemask": "import modelscope_facemask\nfrom modelscope.pipelines import pipeline\n",
            "facemask_submodule": "from modelscope_facemask.modelscope_adapters.pipeline import FaceMaskPipeline\n"}
    done = _python("-c", f"MODEL_DIR = {str(small_model_dir)!r}\n" + lead[first] + REGISTRY_CHECK)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_the_tests_never_write_into_the_users_package_cache():
    """The session's package cache and engine cache are a temporary folder, not ``~/.cache/modelscope-facemask``."""
    from modelscope_facemask.engines.export_cache import engine_cache_dir
    from modelscope_facemask.model_files.registry_files import DEFAULT_CACHE_DIR, cache_dir

    user_cache = Path(DEFAULT_CACHE_DIR).expanduser().resolve()
    for folder in (cache_dir(), engine_cache_dir()):
        resolved = Path(folder).resolve()
        assert resolved != user_cache and user_cache not in resolved.parents, folder
        assert Path(tempfile.gettempdir()).resolve() in resolved.parents, folder
