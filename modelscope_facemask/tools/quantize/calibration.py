"""The calibration set of ``facemask quantize``: image files (and folders of them), split deterministically into the
images NNCF calibrates on and the images held out for the fidelity report, and the set's hash (the sha256 of the
sorted list of the files' sha256s, so renaming or reordering files does not change it)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ...errors import ConfigurationError

#: NNCF's own default number of calibration samples
DEFAULT_SUBSET = 300


@dataclass(frozen=True)
class CalibrationSplit:
    """The calibration images (``subset`` of them at most) and the held-out images, both sorted by path."""

    calibration: list[Path]
    held_out: list[Path]
    #: every image given, sorted (what the hash covers)
    given: list[Path]


def calibration_images(sources: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files from ``sources`` (files, or folders searched recursively), sorted and without duplicates;
    :class:`ConfigurationError` naming what is missing or empty."""
    from ...faces.image_sources import image_paths_under

    found: set[Path] = set()
    for source in sources:
        path = Path(os.path.expanduser(os.fspath(source)))
        if path.is_dir():
            images = image_paths_under(path)
            if not images:
                raise ConfigurationError(f"calibration folder {str(path)!r} holds no images: pass photos like the "
                                         "ones the model will see (at least 2, with faces)")
            found.update(Path(p) for p in images)
        elif path.is_file():
            found.add(path)
        else:
            raise ConfigurationError(f"calibration image or folder {str(path)!r} does not exist: pass image files or "
                                     "folders of them")
    return sorted(found)


def held_out_count(total: int, held_out: int | None) -> int:
    """How many images are held out: ``held_out``, or by default a fifth (at least 1)."""
    count = max(1, total // 5) if held_out is None else held_out
    if count < 1 or count >= total:
        raise ConfigurationError(f"--held-out {count} of {total} calibration images leaves "
                                 f"{'no image to calibrate on' if count >= total else 'none for the fidelity report'}:"
                                 " hold out at least 1 and fewer than all (give more images)")
    return count


def split_calibration(images: list[Path], *, held_out: int | None = None,
                      subset: int | None = None) -> CalibrationSplit:
    """Hold out ``held_out`` images spread evenly over the sorted list (index ``(i + 0.5) * n / held_out``); the
    first ``subset`` of the others calibrate."""
    images = sorted(images)
    count = held_out_count(len(images), held_out)
    picked = {int((i + 0.5) * len(images) / count) for i in range(count)}
    rest = [p for i, p in enumerate(images) if i not in picked]
    limit = DEFAULT_SUBSET if subset is None else subset
    if limit < 1:
        raise ConfigurationError(f"--subset must be a positive number of images, got {limit}")
    return CalibrationSplit(calibration=rest[:limit], held_out=[images[i] for i in sorted(picked)], given=images)


def calibration_hash(images: Iterable[Path]) -> str:
    """sha256 of the sorted sha256s of the files (one hex digest per line)."""
    from ...model_files.manifest import file_sha256

    digests = sorted(file_sha256(p) for p in images)
    return hashlib.sha256("\n".join(digests).encode("ascii")).hexdigest()
