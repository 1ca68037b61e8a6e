"""``facemask gallery build|add|remove|info``: a FAISS gallery of enrolled faces for ``facemask identify``."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..support.printable import check_identity_names, printable
from .common import DEFAULT_MODEL, UsageError, add_command, add_model_options, json_text, open_pipeline, positive_int
from .output_paths import add_overwrite_option, check_output_file, check_output_folder

SOURCES = """SRC is one of:
  a folder tree SRC/IDENTITY/*.jpg   one subfolder per person (any image type; nested folders count for it)
  a CSV file with header path,identity   (relative paths are relative to the CSV's folder)
  Parquet face rows (FILE.parquet or a folder of shards from `facemask embed --out DIR`): their embeddings are
      used as they are, no model is loaded, and an image's identity is its parent folder's name
Each image enrols one embedding, of its largest face. Images with no face or an error are listed and not enrolled."""

BUILD_DESCRIPTION = f"""Build a gallery folder G from labelled images.

{SOURCES}

G holds index.faiss (exact inner-product search up to a size, approximate HNSW above: --index), rows.parquet (id,
identity, source, key, embedding) and manifest.json (recognizer weights sha256, embedding-contract sha256, counts).
Each write makes a new generation folder inside G, then switches manifest.json to it; one writer at a time (a lock
in G, waited for up to FACEMASK_GALLERY_LOCK_TIMEOUT seconds, default 600): readers see the old gallery or the new
one. Exit code 1 when some images were not enrolled (the gallery is written with the others; nothing is written
when no image could be enrolled), 2 on a usage error."""

ADD_DESCRIPTION = f"""Enrol more images into gallery G (new or existing identities) without rebuilding its index.

{SOURCES}

The model defaults to the one that built G; another recognizer or embedding contract is refused. Images already in
G (same source path) are skipped. Exit code 1 when some images were not enrolled, 2 on a usage error."""

EPILOG_THRESHOLD = ("Search scores are cosine similarities. `facemask identify`'s default threshold is an uncalibrated "
                    "placeholder: calibrate it with `facemask evaluate --gallery G --probes SRC`.")


def register(commands: Any) -> None:
    parser = commands.add_parser("gallery", help="build and change a face gallery for 1:N identification",
                                 description="A face gallery for 1:N identification: `build` one from labelled "
                                             "images, `add` images, `remove` identities, `info` about it.",
                                 epilog=EPILOG_THRESHOLD)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = add_command(actions, "build", help="build a gallery folder from labelled images",
                        description=BUILD_DESCRIPTION, epilog=EPILOG_THRESHOLD)
    build.add_argument("source", metavar="SRC", help="IDENTITY/*.jpg folder tree, path,identity CSV, or face rows")
    build.add_argument("--out", required=True, metavar="G", help="gallery folder to write")
    build.add_argument("--index", default="auto", metavar="KIND",
                       help="'auto' (default: exact search up to a size, approximate above), 'exact', or the "
                            "approximate kind ('hnsw')")
    build.add_argument("--replace", action="store_true", help="replace an existing gallery folder G")
    _common_options(build)
    build.set_defaults(handler=run_build)

    add = add_command(actions, "add", help="enrol more images into a gallery", description=ADD_DESCRIPTION)
    add.add_argument("gallery", metavar="G", help="gallery folder")
    add.add_argument("source", metavar="SRC", help="IDENTITY/*.jpg folder tree, path,identity CSV, or face rows")
    _common_options(add)
    add.set_defaults(handler=run_add)

    remove = add_command(actions, "remove", help="remove identities from a gallery",
                         description="Remove every image of the given identities from gallery G, without rebuilding "
                                     "its index. An identity that is not in G is an error and nothing is changed.")
    remove.add_argument("gallery", metavar="G", help="gallery folder")
    remove.add_argument("identities", nargs="+", metavar="IDENTITY", help="identities to remove")
    remove.set_defaults(handler=run_remove)

    info = add_command(actions, "info", help="describe a gallery",
                       description="Model, hashes, index kind and counts of gallery G (its files are verified "
                                   "against the manifest).")
    info.add_argument("gallery", metavar="G", help="gallery folder")
    info.add_argument("--identities", action="store_true", help="also list the identities with their image counts")
    _json_options(info, "the description", legacy_file=False)
    info.set_defaults(handler=run_info)


def _common_options(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    model_default(parser, f"the gallery's model when G exists, else {DEFAULT_MODEL}")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default 16)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _json_options(parser, "the enrolment report (enrolled, not enrolled with the reason, counts)", legacy_file=True)


def _json_options(parser: argparse.ArgumentParser, what: str, *, legacy_file: bool) -> None:
    from .json_option import add_json_options

    add_json_options(parser, what, legacy_file=legacy_file, positionals=legacy_file)
    add_overwrite_option(parser, "an existing --json-out file")


def model_default(parser: argparse.ArgumentParser, default: str) -> None:
    """``--model`` defaults to None (resolved later, e.g. to the gallery's model); its help says what it means."""
    parser.set_defaults(model=None)
    for action in parser._actions:
        if action.dest == "model":
            action.help = (f"ModelScope hub id (owner/name), hf://OWNER/NAME[@REVISION] (Hugging Face Hub) or local "
                           f"model folder (default: {default})")


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """``--ef-search N`` (HNSW search breadth) and ``--search faiss|bf16`` (how the gallery is searched)."""
    parser.add_argument("--ef-search", type=positive_int, default=None, metavar="N",
                        help="HNSW galleries (over 200,000 images): search breadth for this run; higher finds the "
                             "exact top-1 more often and is slower (default: the gallery's, 256 for new galleries; "
                             "at 1M images 256 gave recall@1 0.91 against exact search; --search bf16 gave 1.0). "
                             "Exact galleries ignore it")
    parser.add_argument("--search", default="faiss", choices=("faiss", "bf16"),  # vector_index.SEARCH_METHODS
                        help="faiss (default): the gallery index's own search; bf16: scan every enrolled embedding "
                             "in bfloat16 and re-score the best in float32 (exact scores; fast on CPUs with AMX or "
                             "avx512_bf16, slow without; also makes an HNSW gallery's answers exact-or-nearly)")


def apply_search_options(gallery: Any, args: argparse.Namespace) -> None:
    """Apply ``--search`` and ``--ef-search`` to the gallery's index (a note on stderr where --ef-search does
    nothing: an exact gallery, or a bf16 scan)."""
    gallery.index.search_method = args.search
    if args.ef_search is None:
        return
    if gallery.index.kind != "hnsw" or args.search != "faiss":
        why = (f"this one is {gallery.index.kind} (recall 1)" if gallery.index.kind != "hnsw"
               else f"--search {args.search} scans every vector")
        print(f"note: --ef-search applies to the faiss search of HNSW galleries; {why}, so it is ignored",
              file=sys.stderr)
        return
    gallery.index.ef_search = args.ef_search


def enrol(args: argparse.Namespace, source: str, model: str) -> Any:
    """The embedded faces of ``source`` (images are embedded with ``--model``; face rows are read as they are)."""
    from ..errors import EnrolmentSourceError
    from ..tools.gallery.enrolment_sources import LabelledImages, embed_images, read_source
    from .common import untrained_warning

    try:
        found = read_source(source)
    except EnrolmentSourceError as exc:
        raise UsageError(str(exc)) from None
    check_identity_names(zip(found.identities, found.sources) if not isinstance(found, LabelledImages)
                         else ((image.identity, image.source) for image in found.images))
    if not isinstance(found, LabelledImages):
        return found
    args.model = os.path.abspath(model) if os.path.isdir(model) else model  # usable later from any folder
    pipeline = open_pipeline(args, max_faces=1)
    untrained_warning(pipeline)
    embedded = embed_images(pipeline, found.images, model=args.model, batch_size=args.batch_size,
                            progress=not args.no_progress)
    embedded.problems[:0] = found.problems
    return embedded


def _report(args: argparse.Namespace, problems: list[tuple[str, str]]) -> None:
    """The images not enrolled, one line each (left out with --json: they are in the JSON report)."""
    if not args.json:
        for source, reason in problems:
            print(f"not enrolled {printable(source)}: {printable(reason)}")


def _write_report(args: argparse.Namespace, gallery_path: str, gallery: Any, enrolled: int,
                  problems: list[tuple[str, str]], skipped_duplicates: int = 0) -> None:
    """The enrolment report: printed (--json), written (--json-out)."""
    from .json_option import emit_json

    emit_json(args, {"gallery": str(gallery_path), "enrolled_images": enrolled, "already_enrolled": skipped_duplicates,
                     "not_enrolled": [{"source": s, "reason": r} for s, r in problems],
                     "images": len(gallery) if gallery is not None else 0,
                     "identities": len(gallery.identities()) if gallery is not None else 0})


def _exit_code(problems: list[tuple[str, str]]) -> int:
    """1 when an image was not enrolled (:mod:`.exit_codes`)."""
    from .exit_codes import negative_if

    return negative_if(bool(problems))


def _check_gallery_extras(args: argparse.Namespace) -> None:
    """faiss and pyarrow (extra [gallery]), and any other extra this run needs, before any work."""
    from .common import check_extras

    check_extras(args, extras=[("gallery", "the face gallery")])


def _source_folder(source: str) -> dict[str, str]:
    """The enrolment source as ``folders`` for the output checks, when it is a folder (no output goes inside it)."""
    return {source: "the enrolment source"} if os.path.isdir(source) else {}


def _check_report(args: argparse.Namespace, gallery: str) -> None:
    """``--json-out``: not the source, not inside the gallery or the source folder, not an existing file unless
    ``--overwrite``."""
    from .json_option import check_json_out

    check_json_out(args, reads=[args.source], folders={gallery: "the gallery being written",
                                                       **_source_folder(args.source)})


def run_build(args: argparse.Namespace) -> int:
    from ..tools.gallery.face_gallery import FaceGallery, GalleryModel
    from ..tools.gallery.gallery_folder import folder_state
    from ..tools.gallery.vector_index import INDEX_KINDS
    from .json_option import say_written, text_stream

    _check_gallery_extras(args)
    if args.index not in INDEX_KINDS:
        raise UsageError(f"--index {args.index!r}: choose one of {', '.join(INDEX_KINDS)}")
    out = Path(args.out)
    state = folder_state(out)  # "unfinished": a first build that was killed, completed by this one
    if state == "foreign" or state == "gallery" and not args.replace:
        raise UsageError(f"--out {args.out!r} exists: " + ("it is not a FaceMask gallery and is never replaced; choose "
                         "another folder" if args.replace else "pass --replace to replace a gallery, or choose another "
                         "folder"))
    check_output_folder(out, "--out", folders=_source_folder(args.source))
    _check_report(args, args.out)
    embedded = enrol(args, args.source, args.model or DEFAULT_MODEL)
    _report(args, embedded.problems)
    if not len(embedded.sources):
        _write_report(args, args.out, None, 0, embedded.problems)
        print(f"nothing enrolled from {args.source!r}: no image had a usable face; no gallery written",
              file=sys.stderr)
        return _exit_code([("", "nothing enrolled")])
    model = GalleryModel.from_metadata(embedded.metadata)
    gallery = FaceGallery.build(embedded.embeddings, embedded.identities, embedded.sources, model=model,
                                keys=embedded.keys, kind=args.index)
    gallery.save(out, replace=args.replace)
    _write_report(args, args.out, gallery, len(embedded.sources), embedded.problems)
    print(f"gallery {printable(args.out)}: {len(gallery)} image(s) of {len(gallery.identities())} identit"
          f"{'y' if len(gallery.identities()) == 1 else 'ies'} enrolled, {len(embedded.problems)} not enrolled; "
          f"{gallery.index.kind} index; model {printable(model.model)}", file=text_stream(args))
    say_written(args, "enrolment report")
    return _exit_code(embedded.problems)


def run_add(args: argparse.Namespace) -> int:
    from ..tools.gallery.face_gallery import FaceGallery, GalleryModel
    from ..tools.gallery.gallery_folder import writer_lock
    from .json_option import say_written, text_stream

    _check_gallery_extras(args)
    gallery = FaceGallery.load(args.gallery)  # a bad gallery fails before the model loads
    _check_report(args, args.gallery)
    embedded = enrol(args, args.source, args.model or gallery.model.model)
    model = GalleryModel.from_metadata(embedded.metadata)
    gallery.check_model(model)
    with writer_lock(args.gallery):  # load-add-save as one step: a concurrent writer's enrolments are kept
        if not gallery.is_current(args.gallery):
            gallery = FaceGallery.load(args.gallery)  # changed while the images were embedded
            gallery.check_model(model)
        fresh = [i for i, known in enumerate(gallery.enrolled_photos(embedded.sources)) if not known]
        duplicates = len(embedded.sources) - len(fresh)
        before = set(gallery.identities())
        gallery.add(embedded.embeddings[fresh], [embedded.identities[i] for i in fresh],
                    [embedded.sources[i] for i in fresh], [embedded.keys[i] for i in fresh])
        if fresh:
            gallery.save(args.gallery, replace=True)
    _report(args, embedded.problems)
    new = len(set(gallery.identities()) - before)
    _write_report(args, args.gallery, gallery, len(fresh), embedded.problems, duplicates)
    print(f"gallery {printable(args.gallery)}: {len(fresh)} image(s) added "
          f"({new} new identit{'y' if new == 1 else 'ies'}), "
          f"{duplicates} already enrolled, {len(embedded.problems)} not enrolled; now {len(gallery)} image(s) of "
          f"{len(gallery.identities())} identities", file=text_stream(args))
    say_written(args, "enrolment report")
    return _exit_code(embedded.problems)


def run_remove(args: argparse.Namespace) -> int:
    from ..tools.gallery.face_gallery import FaceGallery
    from ..tools.gallery.gallery_folder import writer_lock

    _check_gallery_extras(args)
    with writer_lock(args.gallery):  # load-remove-save as one step: a concurrent writer's changes are kept
        gallery = FaceGallery.load(args.gallery)
        removed = gallery.remove(args.identities)
        gallery.save(args.gallery, replace=True)
    names = list(dict.fromkeys(args.identities))
    print(f"gallery {printable(args.gallery)}: removed {removed} image(s) of {len(names)} identit"
          f"{'y' if len(names) == 1 else 'ies'} ({', '.join(map(printable, names))}); now {len(gallery)} image(s) of "
          f"{len(gallery.identities())} identities")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ..tools.gallery.face_gallery import FaceGallery
    from .json_option import check_json_out, emit_json, say_written

    _check_gallery_extras(args)
    check_json_out(args, folders={args.gallery: "the gallery being read"})
    gallery = FaceGallery.load(args.gallery)  # verifies every file against the manifest
    manifest = gallery.stored.to_json()  # the manifest of the generation read, even while a writer switches it
    info = {key: manifest.get(key) for key in ("format", "format_version", "created", "created_by", "written_by",
                                               "model", "recognizer_sha256", "detector_sha256", "contract_sha256",
                                               "embedding_dim", "index_kind", "counts")}
    if args.identities:
        info["identities"] = gallery.image_counts()
    emit_json(args, info)
    if args.json:
        return 0
    print(f"gallery {printable(args.gallery)} ({manifest['format']} v{manifest['format_version']}, written by "
          f"{printable(manifest.get('written_by'))}; created {printable(manifest.get('created'))})")
    print(f"  {len(gallery)} image(s) of {len(gallery.identities())} identities; {gallery.index.kind} index, "
          f"{gallery.dim}-d")
    print(f"  model {printable(gallery.model.model)}")
    print(f"  recognizer weights sha256 {gallery.model.recognizer_sha256}")
    print(f"  embedding contract sha256 {gallery.model.contract_sha256}")
    for name, count in info.get("identities", {}).items():
        print(f"  {printable(name)}: {count} image(s)")
    say_written(args, "description")
    return 0
