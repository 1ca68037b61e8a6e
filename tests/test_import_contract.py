"""The layering of ARCHITECTURE.md is enforced: ``lint-imports`` (import-linter, contracts in ``.importlinter``) passes
on the package, and fails on a copy of it with one wrong import added, for each kind of contract; the folders
ARCHITECTURE.md names are the package's; modules that moved keep their old import paths."""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import modelscope_facemask
from modelscope_facemask import _old_import_paths

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "modelscope_facemask"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package found first on the path from ``root`` (its .importlinter)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / ".importlinter"), "--no-cache"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and "4 kept" in result.stdout, result.stdout


WRONG_IMPORTS = {  # file to append to -> (the wrong import, the contract it breaks)
    "nets/iresnet.py": ("from ..cli import main", "Layers"),
    "faces/align.py": ("from ..modelscope_adapters import pipeline", "Layers"),
    "tools/corpus/face_rows.py": ("from . import rows_lock", "No import cycles"),
    "tools/hub/pack.py": ("from ...testing import hub_emulator", "never imports the test doubles"),
    "faces/choose.py": ("import modelscope.outputs", "no ModelScope import"),
}


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    shutil.copytree(PACKAGE, root / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", root / ".importlinter")
    return root


@pytest.mark.parametrize("target", sorted(WRONG_IMPORTS))
def test_a_wrong_import_breaks_its_contract(package_copy, target):
    statement, contract = WRONG_IMPORTS[target]
    path = package_copy / PACKAGE.name / target
    original = path.read_text()
    path.write_text(original + f"\n{statement}  # deliberately wrong\n")
    try:
        result = lint_imports(package_copy)
    finally:
        path.write_text(original)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout


def test_architecture_names_every_folder_and_layer():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    missing = [f for f in folders if f"`{f}/`" not in text]
    assert not missing, f"ARCHITECTURE.md does not describe {missing}"
    for tool in sorted(p for p in (PACKAGE / "tools").iterdir() if p.name != "__pycache__"):
        name = tool.name if tool.is_dir() else tool.stem
        if name != "__init__":
            assert f"`{name}" in text, f"ARCHITECTURE.md does not place tools/{tool.name}"
    top_modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top_modules == ["__init__.py", "_old_import_paths.py", "errors.py", "metainfo.py", "version.py"]


@pytest.mark.parametrize("old", sorted(_old_import_paths.MOVED_MODULES) + sorted(_old_import_paths.MOVED_PACKAGES))
def test_an_old_import_path_is_the_moved_module(old):
    new = _old_import_paths.new_module_name(f"modelscope_facemask.{old}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(f"modelscope_facemask.{old}")
    assert module is importlib.import_module(new)  # one module object, not a second copy


def test_old_paths_users_have_keep_working():
    """The paths the README and examples used before the move (a package, a submodule of a moved package)."""
    from modelscope_facemask.gallery import FaceGallery
    from modelscope_facemask.hub.model_folders import hf_model_dir
    from modelscope_facemask.tools.gallery import FaceGallery as moved_gallery
    from modelscope_facemask.model_files.model_folders import hf_model_dir as moved_hf_model_dir
    assert FaceGallery is moved_gallery and hf_model_dir is moved_hf_model_dir
    import modelscope_facemask.gallery.face_gallery as old_module
    assert old_module is importlib.import_module("modelscope_facemask.tools.gallery.face_gallery")
    import modelscope_facemask.demo.demo_model as old_submodule  # a module that became a package: its parts follow
    assert old_submodule is importlib.import_module("modelscope_facemask.tools.demo.demo_model")
    assert modelscope_facemask.FaceMaskPipeline.__module__ == "modelscope_facemask.modelscope_adapters.pipeline"


def test_an_old_path_warns_and_runs_with_python_dash_m():
    result = subprocess.run([sys.executable, "-W", "always::DeprecationWarning", "-m", "modelscope_facemask.demo",
                             "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "--hub-timeout" in result.stdout
    assert "modelscope_facemask.demo moved to modelscope_facemask.tools.demo" in result.stderr
