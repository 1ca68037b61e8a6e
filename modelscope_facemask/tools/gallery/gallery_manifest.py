"""``G/manifest.json`` as one typed value: :meth:`GalleryManifest.from_json` checks every key and type once, so a
bad value is a :class:`GalleryFormatError` naming the file and the key, never a ValueError or KeyError later.

Format 1 galleries keep their files directly in ``G``; format 2 galleries keep them in the generation folder the
manifest names (``generation``); see :mod:`~modelscope_facemask.tools.gallery.gallery_folder` for the layout.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from ...errors import GalleryFormatError

FORMAT = "facemask-gallery"
FORMAT_VERSION = 2  # 1: files directly in G (still read; the next write converts it); 2: generation folders
INDEX_FILE = "index.faiss"
ROWS_FILE = "rows.parquet"
MANIFEST_FILE = "manifest.json"
STORED_INDEX_KINDS = ("exact", "hnsw")
GENERATION_NAME = re.compile(r"gen-(\d{6,})-[0-9a-f]{8}")
REBUILD = "rebuild it with `facemask gallery build SRC --out G`"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileRecord:
    """Size and sha256 of one gallery file, as the manifest records them."""

    size: int
    sha256: str


@dataclass(frozen=True)
class GalleryManifest:
    """Every key of a gallery manifest, typed and checked (:meth:`from_json`)."""

    format_version: int
    generation: str | None  # the folder of the files (format 2); None: the files lie in G itself (format 1)
    model: str
    recognizer_sha256: str
    detector_sha256: str | None
    contract_sha256: str
    contract: dict[str, Any]
    embedding_dim: int
    index_kind: str
    images: int
    identities: int
    next_id: int
    files: dict[str, FileRecord]
    created: str | None = None
    created_by: str | None = None
    written_by: str | None = None

    @classmethod
    def from_json(cls, data: Any, where: str) -> "GalleryManifest":
        """The manifest parsed from JSON ``data`` read from ``where`` (the file, for messages)."""
        keys = _Keys(data, where)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise GalleryFormatError(f"{where!r} is not a FaceMask gallery manifest (format {found!r}); {REBUILD}")
        version = data.get("format_version")
        if not _is_int(version) or not 1 <= version <= FORMAT_VERSION:
            raise GalleryFormatError(f"{where!r} has gallery format version {version!r} (key 'format_version'); "
                                     f"this modelscope-facemask reads versions 1 to {FORMAT_VERSION}: upgrade the "
                                     f"package or {REBUILD}")
        if version == 1:
            if data.get("generation") is not None:
                keys.bad("generation", "absent in a format 1 manifest (its files lie in the gallery folder)")
            generation = None
        else:
            generation = keys.text("generation")
            if not GENERATION_NAME.fullmatch(generation):
                keys.bad("generation", "a generation folder name gen-NNNNNN-xxxxxxxx")
        counts = keys.mapping("counts")
        images = _Keys(counts, where, "counts.").count("images")
        identities = _Keys(counts, where, "counts.").count("identities")
        if identities > images:
            keys.bad("counts", f"at most as many identities as images ({images})")
        next_id = keys.count("next_id")
        if next_id < images:
            keys.bad("next_id", f"an integer >= counts.images ({images}): row ids are unique below next_id")
        dim = keys.count("embedding_dim")
        if dim < 1:
            keys.bad("embedding_dim", "a positive integer")
        kind = keys.text("index_kind")
        if kind not in STORED_INDEX_KINDS:
            keys.bad("index_kind", f"one of {', '.join(STORED_INDEX_KINDS)}")
        contract = keys.mapping("contract")
        files = keys.mapping("files")
        if set(files) != {INDEX_FILE, ROWS_FILE}:
            keys.bad("files", f"an object listing exactly {INDEX_FILE} and {ROWS_FILE}")
        records = {}
        for name in (INDEX_FILE, ROWS_FILE):
            if not isinstance(files[name], dict):
                _Keys(files, where, "files.").bad(name, "an object with size and sha256")
            entry = _Keys(files[name], where, f"files.{name}.")
            records[name] = FileRecord(entry.count("size"), entry.sha256("sha256"))
        return cls(version, generation, keys.text("model", optional=True) or "", keys.sha256("recognizer_sha256"),
                   keys.sha256("detector_sha256", optional=True), keys.sha256("contract_sha256"), dict(contract), dim,
                   kind, images, identities, next_id, records, keys.text("created", optional=True),
                   keys.text("created_by", optional=True), keys.text("written_by", optional=True))

    def to_json(self) -> dict[str, Any]:
        """The JSON object ``manifest.json`` holds (``from_json`` of it gives this manifest back)."""
        data: dict[str, Any] = {
            "format": FORMAT, "format_version": self.format_version, "created": self.created,
            "created_by": self.created_by, "written_by": self.written_by, "model": self.model,
            "recognizer_sha256": self.recognizer_sha256, "detector_sha256": self.detector_sha256,
            "contract_sha256": self.contract_sha256, "contract": self.contract, "embedding_dim": self.embedding_dim,
            "index_kind": self.index_kind, "counts": {"images": self.images, "identities": self.identities},
            "next_id": self.next_id,
            "files": {name: {"size": r.size, "sha256": r.sha256} for name, r in self.files.items()}}
        if self.generation is not None:
            data["generation"] = self.generation
        return data

    def generation_number(self) -> int:
        """The number of this manifest's generation (0 for a format 1 gallery)."""
        found = GENERATION_NAME.fullmatch(self.generation or "")
        return int(found.group(1)) if found else 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Keys:
    """Typed access to the keys of one JSON object of ``where``; a missing or wrong value raises
    :class:`GalleryFormatError` naming the file and the key (``prefix`` for nested objects)."""

    def __init__(self, data: Any, where: str, prefix: str = "") -> None:
        self.data = data if isinstance(data, Mapping) else {}
        self.where, self.prefix = where, prefix

    def bad(self, key: str, wanted: str) -> None:
        shown = repr(self.data[key]) if key in self.data else "nothing (the key is missing)"
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise GalleryFormatError(f"{self.where!r}: key {self.prefix + key!r} must be {wanted}, got {shown}; the "
                                 f"manifest is damaged or hand-edited: {REBUILD}")

    def _get(self, key: str, optional: bool) -> Any:
        if key not in self.data and not optional:
            raise GalleryFormatError(f"{self.where!r}: key {self.prefix + key!r} is missing; the manifest is damaged "
                                     f"or hand-edited: {REBUILD}")
        return self.data.get(key)

    def text(self, key: str, *, optional: bool = False) -> Any:
        value = self._get(key, optional)
        if not (isinstance(value, str) or (optional and value is None)):
            self.bad(key, "a string" + (" or null" if optional else ""))
        return value

    def sha256(self, key: str, *, optional: bool = False) -> Any:
        value = self._get(key, optional)
        if not ((isinstance(value, str) and _SHA256.fullmatch(value)) or (optional and value is None)):
            self.bad(key, "a sha256 (64 lowercase hex digits)" + (" or null" if optional else ""))
        return value

    def count(self, key: str) -> int:
        value = self._get(key, False)
        if not _is_int(value) or value < 0:
            self.bad(key, "a non-negative integer")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self._get(key, False)
        if not isinstance(value, dict):
            self.bad(key, "a JSON object")
        return value
