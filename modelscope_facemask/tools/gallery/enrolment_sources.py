"""Where enrolment (and probe) images come from: a folder tree, a CSV, or Parquet face rows already embedded.

Three source kinds, chosen by what the path is:

* a folder tree ``SRC/IDENTITY/*.jpg``: every image under an immediate subfolder belongs to that subfolder's name
  (nested folders inside an identity folder count for that identity); images lying directly in ``SRC`` belong to no
  identity and are reported, not used;
* a CSV file with the header ``path,identity`` (relative paths are relative to the CSV's folder);
* Parquet face rows (``facemask embed --ray`` output: a ``.parquet`` file or a folder of ``.parquet`` shards): the
  embeddings are used as they are (no second embedding run); an image's identity is the name of its parent folder.

Local image sources of the first two kinds are recorded as absolute, normalised paths (URLs as they are; face rows
keep the sources their run recorded), so that a gallery recognises an image already enrolled from any working folder.
A photo that one source lists twice (by resolved path: a CSV line repeated, a symlink to another listed image, the
same image under a relative and an absolute path in face rows) is enrolled once, the repeat reported as not
enrolled; listed under two identities, the source is refused (:class:`EnrolmentSourceError` naming both).
"""
from __future__ import annotations

import csv
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np

from ...errors import EnrolmentSourceError
from ..corpus.face_rows import is_url, source_name
from ...faces.image_sources import IMAGE_SUFFIXES, is_image_entry


@dataclass(frozen=True)
class LabelledImage:
    """One image and the identity it shows. ``key`` is a machine-independent name (``IDENTITY/file.jpg`` or the
    path as written in the CSV), used e.g. to seed per-probe masks."""

    source: str
    identity: str
    key: str


@dataclass
class LabelledImages:
    """Images still to embed, plus the ones that cannot be used (``problems``: (source, reason))."""

    images: list[LabelledImage]
    problems: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class EmbeddedFaces:
    """One embedding per image (its largest face), already computed, with the run's metadata (model, weights,
    contract); ``problems`` lists the images that have no face or an error, with the reason."""

    sources: list[str]
    identities: list[str]
    keys: list[str]
    embeddings: np.ndarray
    metadata: dict[str, Any]
    problems: list[tuple[str, str]] = field(default_factory=list)


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*"))


def is_face_rows(path: str | os.PathLike) -> bool:
    """True for a ``.parquet`` file or a folder holding ``.parquet`` files and no images."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == ".parquet"
    return path.is_dir() and any(path.glob("*.parquet")) and not _has_images(path)


def read_source(path: str | os.PathLike) -> LabelledImages | EmbeddedFaces:
    """The labelled images (or the already embedded faces) of ``path``; see the module docstring for the kinds."""
    path = Path(path)
    if not path.exists():
        raise EnrolmentSourceError(f"no such file or folder: {str(path)!r} (give an IDENTITY/*.jpg folder tree, a "
                                   "path,identity CSV, or Parquet face rows from `facemask embed --ray`)")
    from .gallery_folder import is_gallery_folder

    if path.is_dir() and is_gallery_folder(path):
        raise EnrolmentSourceError(f"{str(path)!r} is a gallery, not a source of images: enrol from the images (an "
                                   "IDENTITY/*.jpg folder tree or a path,identity CSV) or from the face rows of "
                                   "`facemask embed --out DIR`; to change this gallery use `facemask gallery add` or "
                                   "`facemask gallery remove`")
    if is_face_rows(path):
        return read_face_rows_source(path)
    if path.is_dir():
        return read_folder_tree(path)
    if path.suffix.lower() == ".csv":
        return read_csv(path)
    raise EnrolmentSourceError(f"{str(path)!r} is neither a folder, a .csv nor a .parquet file: give an "
                               "IDENTITY/*.jpg folder tree, a CSV with the header path,identity, or Parquet face rows")


def read_folder_tree(root: str | os.PathLike) -> LabelledImages:
    """``root/IDENTITY/**/*.jpg`` (any image suffix; hidden files and folders skipped; a dangling symlink or a FIFO
    is listed and becomes a problem when embedded), sorted by identity, path. Sources are absolute paths (a gallery
    knows its images whatever the working folder); a photo listed twice is enrolled once (:func:`drop_repeats`)."""
    root = Path(source_name(root))
    images, problems = [], []
    for item in sorted(root.iterdir()):
        if item.name.startswith("."):
            continue
        if item.is_file() and item.suffix.lower() in IMAGE_SUFFIXES:
            problems.append((str(item), "not inside an identity folder (expected SRC/IDENTITY/image)"))
        elif item.is_dir():
            for path in sorted(item.rglob("*")):
                rel = path.relative_to(root)
                if is_image_entry(path) and not any(part.startswith(".") for part in rel.parts):
                    images.append(LabelledImage(str(path), item.name, rel.as_posix()))
    if not images:
        raise EnrolmentSourceError(f"no images in identity folders under {str(root)!r}: the layout is "
                                   f"{root.name}/IDENTITY/*.jpg (one subfolder per person)")
    images, repeats = drop_repeats(images, [i.key for i in images], str(root))
    return LabelledImages(images, problems + repeats)


def drop_repeats(images: Sequence[LabelledImage], labels: Sequence[str],
                 where: str) -> tuple[list[LabelledImage], list[tuple[str, str]]]:
    """``images`` with each photo once (compared by resolved path; the first kept) and the repeats as problems
    (source, reason). ``labels`` name each image in messages (``line 3``, ``IDENTITY/file.jpg``). Raises
    :class:`EnrolmentSourceError` when one photo is listed under two identities: which one it shows is unknown."""
    from ..corpus.face_rows import source_keys

    first: dict[str, int] = {}
    kept: list[LabelledImage] = []
    repeats: list[tuple[str, str]] = []
    for slot, (image, key) in enumerate(zip(images, source_keys([i.source for i in images]))):
        if key not in first:
            first[key] = slot
            kept.append(image)
            continue
        earlier = images[first[key]]
        if earlier.identity != image.identity:
            raise EnrolmentSourceError(
                f"{where}: {labels[first[key]]} ({earlier.identity!r}) and {labels[slot]} ({image.identity!r}) are "
                f"the same photo {key!r} under two identities; keep it under the identity it shows and remove "
                "the other")
        repeats.append((image.source, f"{labels[slot]} repeats {labels[first[key]]} (the same photo, identity "
                                      f"{image.identity!r}): enrolled once"))
    return kept, repeats


def read_csv(path: str | os.PathLike) -> LabelledImages:
    """A CSV with the header ``path,identity`` (other columns ignored); relative paths against the CSV's folder."""
    path = Path(path)
    images, lines = [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = {(c or "").strip().lower(): c for c in (reader.fieldnames or [])}
            missing = [c for c in ("path", "identity") if c not in columns]
            if missing:
                raise EnrolmentSourceError(f"{path}: missing column(s) {', '.join(missing)}; the header must be "
                                           "path,identity")
            for line, row in enumerate(reader, start=2):
                given = (row[columns["path"]] or "").strip()
                identity = (row[columns["identity"]] or "").strip()
                if not given or not identity:
                    raise EnrolmentSourceError(f"{path}:{line}: empty path or identity")
                source = given if is_url(given) else source_name(os.path.join(path.parent.absolute(), given))
                images.append(LabelledImage(source, identity, given))
                lines.append(f"line {line}")
    except OSError as exc:
        raise EnrolmentSourceError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise EnrolmentSourceError(f"{str(path)!r} is not a UTF-8 CSV text file ({type(exc).__name__}); the "
                                   "enrolment CSV needs the header path,identity") from None
    if not images:
        raise EnrolmentSourceError(f"{path}: no rows")
    images, repeats = drop_repeats(images, lines, str(path))
    return LabelledImages(images, repeats)


def identity_of_source(source: str) -> tuple[str, str]:
    """(identity, key) of a face-rows source: its parent folder's name, and ``IDENTITY/file``."""
    parts = PurePosixPath(source.replace("\\", "/")).parts
    if len(parts) < 2:
        return "", source
    return parts[-2], f"{parts[-2]}/{parts[-1]}"


def read_face_rows_source(path: str | os.PathLike) -> EmbeddedFaces:
    """The largest face (by box area) of every image in Parquet face rows; images with no face or an error are
    problems. A photo stored under two sources (rows of an older version: a relative and an absolute path) is
    enrolled once (:func:`drop_repeats`, by resolved stored source). The schema metadata must say which model and
    contract made the embeddings; its model folder is recorded as an absolute path when it is one from here."""
    from ..corpus.embedding_runs import recorded_model
    from ..corpus.face_rows import read_face_rows, rows_metadata

    table = read_face_rows(path, columns=("source", "face_index", "box", "embedding", "error"))  # FaceRowsError
    metadata = rows_metadata(table)
    if isinstance(metadata.get("model"), str):
        metadata["model"] = recorded_model(metadata["model"])
    source = table.column("source").to_pylist()
    face_index = np.asarray(table.column("face_index").to_numpy(zero_copy_only=False))
    error = table.column("error").to_pylist()
    box_col = table.column("box").to_pylist()
    best: dict[str, tuple[float, int]] = {}
    problems: dict[str, str] = {}
    order: list[str] = []
    for row, (src, index, err, box) in enumerate(zip(source, face_index, error, box_col)):
        if src not in best and src not in problems:
            order.append(src)
        if index < 0 or box is None:
            problems.setdefault(src, err or "no face")
            continue
        area = float((box[2] - box[0]) * (box[3] - box[1]))
        if src not in best or area > best[src][0]:
            best[src] = (area, row)
    embeddings_col = table.column("embedding")
    kept, identities, keys, rows, reasons = [], [], [], [], []
    listed = [LabelledImage(src, *identity_of_source(src)) for src in sorted(order)]
    unique, repeats = drop_repeats(listed, [i.source for i in listed], str(path))
    reasons += repeats
    for src in (i.source for i in unique):
        if src in best:
            identity, key = identity_of_source(src)
            if not identity:
                reasons.append((src, "no parent folder to name its identity"))
                continue
            kept.append(src)
            identities.append(identity)
            keys.append(key)
            rows.append(best[src][1])
        else:
            reasons.append((src, problems[src]))
    if rows:
        picked = embeddings_col.take(rows).to_pylist()
        embeddings = np.asarray(picked, np.float32).reshape(len(rows), -1)
    else:
        embeddings = np.zeros((0, 512), np.float32)
    return EmbeddedFaces(kept, identities, keys, embeddings, metadata, reasons)


def sources_text(problems: Sequence[tuple[str, str]]) -> list[str]:
    """``source: reason`` lines."""
    return [f"{source}: {reason}" for source, reason in problems]


def mask_seed(image: LabelledImage) -> int:
    """The mask seed of a probe: CRC-32 of its machine-independent key (``IDENTITY/file.jpg`` or the CSV path)."""
    return zlib.crc32(image.key.encode("utf-8"))


def _masked_outputs(pipeline: Any, images: Sequence[LabelledImage]) -> list[dict[str, Any]]:
    """Detect on the unmasked photos, draw a mask at each largest face's landmarks (seeded per probe), then run the
    whole pipeline on the masked photos. Images with no face before masking keep their unmasked output."""
    from ...faces.images import load_image
    from ..masks import draw_masks

    outputs: list[dict[str, Any]] = [{} for _ in images]
    prepared = pipeline.preprocessor.prepare([i.source for i in images], max_faces=1)
    masked, slots = [], []
    for slot, (image, item) in enumerate(zip(images, prepared)):
        if isinstance(item, Exception):
            outputs[slot] = {"scores": np.zeros(0), "error": str(item)}
        elif not len(item):
            outputs[slot] = {"scores": np.zeros(0)}
        else:
            photo = draw_masks(load_image(image.source), item.detections.landmarks[:1], seed=mask_seed(image))
            masked.append(np.ascontiguousarray(photo[:, :, ::-1]))  # numpy inputs are BGR
            slots.append(slot)
    for slot, output in zip(slots, pipeline.run_batch(masked, max_faces=1) if masked else []):
        if "error" not in output and not len(output["scores"]):
            output = {**output, "error": "no face found on the masked photo"}
        outputs[slot] = output
    return outputs


def embed_images(pipeline: Any, images: Sequence[LabelledImage], *, model: str, batch_size: int = 16,
                 progress: bool = False, mask: bool = False) -> EmbeddedFaces:
    """The largest face's embedding of each image (``max_faces=1``); an image with no face or an error becomes a
    problem (source, reason). Metadata: ``{"model": model, **regress.run_metadata(pipeline, 1)}``.

    ``mask=True`` (masked-probe evaluation): faces are detected on the unmasked photo, a synthetic mask is drawn on
    the photo at the largest face's five landmarks (``masks.draw_masks``, seed :func:`mask_seed`, so the same probe
    always gets the same mask), and the whole pipeline -- detection, alignment, recognition -- runs on the masked
    photo, as it would on a real masked face. A face the detector no longer finds once masked is a problem.
    """
    from ..regress import run_metadata

    if mask:
        from tqdm import tqdm

        outputs = []
        with tqdm(total=len(images), unit="image", disable=not progress, dynamic_ncols=True) as bar:
            for start in range(0, len(images), batch_size):
                chunk = list(images[start : start + batch_size])
                outputs += _masked_outputs(pipeline, chunk)
                bar.update(len(chunk))
    else:
        from ..corpus.embedding_runs import embed_sources

        outputs = embed_sources(pipeline, [i.source for i in images], max_faces=1, batch_size=batch_size,
                                progress=progress)
    kept: list[LabelledImage] = []
    rows: list[np.ndarray] = []
    problems: list[tuple[str, str]] = []
    for image, output in zip(images, outputs):
        if "error" in output:
            problems.append((image.source, str(output["error"])))
        elif not len(output["scores"]):
            problems.append((image.source, "no face found"))
        else:
            kept.append(image)
            rows.append(np.asarray(output["img_embedding"][0], np.float32))
    embeddings = np.stack(rows) if rows else np.zeros((0, 512), np.float32)
    return EmbeddedFaces([i.source for i in kept], [i.identity for i in kept], [i.key for i in kept], embeddings,
                         {"model": model, **run_metadata(pipeline, 1)}, problems)
