"""``facemask embed``: embeddings of every face (or the largest) in images and folders, to .npz, .jsonl or Parquet
face rows (a file, or a resumable folder of shards, optionally computed on Ray Data)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from ..support.printable import printable
from .common import (KEEP, UsageError, add_command, add_model_options, expand_inputs, json_text, open_pipeline,
                     positive_int, resolve_detector, resolve_model_dir, run_images)
from .output_paths import add_overwrite_option, check_not_an_input, check_output_file, check_output_folder

DESCRIPTION = """Compute FaceMask embeddings for images, folders (searched recursively) and http(s) URLs.

Without --out, one summary line per image is printed. --out FILE.npz writes arrays: images (n,), errors (n,),
face_counts (n,), face_image (m,) (index into images), embeddings (m, 512), scores (m,), boxes (m, 4),
keypoints (m, 10) and metadata (JSON: model, device, precision, versions, weights sha256, embedding contract).
--out FILE.jsonl (or '-' for stdout) writes one JSON object per image.
--out FILE.parquet writes face rows, one row per face: source, face_index, box, score, landmarks, embedding, error
(an image without a face or with an error gets one row with face_index -1), with the metadata in the schema.
--out DIR writes a folder of such Parquet shards, each written atomically, sources stored as absolute paths: a rerun
skips the images already there, however they are named (compared by resolved path; those with an error row too,
unless --retry-errors). One run at a time writes a folder: a second is refused while the first runs. Unreadable
entries of a folder (a dangling symlink, a FIFO) get error rows.
--ray computes them on Ray Data with an actor pool of --workers pipelines (Ray started locally, or the cluster at
--ray-address). Exit code 1 when an image cannot be read or has no face (the others are still embedded; with
--out DIR, among the images embedded by this run), 2 on a usage error; Parquet (pyarrow) and --ray (ray) are
checked before any work."""


def register(commands: Any) -> None:
    parser = add_command(commands, "embed", help="embed the faces in images and folders", description=DESCRIPTION)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files, folders or http(s) URLs")
    add_model_options(parser)
    parser.add_argument("--out", help="FILE.npz, FILE.jsonl, FILE.parquet, DIR (a resumable folder of Parquet "
                        "shards: a name without a suffix) or '-' (JSON lines on stdout)")
    parser.add_argument("--all-faces", action="store_true", help="every face (default: the model's choice, usually "
                        "the largest face only)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default 16)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (shown for folders)")
    parser.add_argument("--shard-size", type=positive_int, default=1000, metavar="N",
                        help="images per Parquet shard with --out DIR (default 1000); an interrupted run redoes at "
                             "most the shard in progress")
    parser.add_argument("--retry-errors", action="store_true",
                        help="with --out DIR: embed again the given images whose rows there are error rows (those "
                             "rows are removed first; without it a rerun skips them like any image already done)")
    add_overwrite_option(parser, "an existing --out FILE.npz/.jsonl/.parquet (--out DIR is appended to instead)")
    ray = parser.add_argument_group("Ray Data (extra [ray]; needs --out DIR)")
    ray.add_argument("--ray", action="store_true", help="run on Ray Data: a pool of --workers actors, one pipeline "
                     "each (and one GPU each when the cluster has GPUs)")
    ray.add_argument("--ray-address", metavar="ADDR", help="use the running Ray cluster at ADDR ('auto', HOST:6379 or "
                     "ray://HOST:10001) instead of starting Ray locally; implies --ray")
    ray.add_argument("--workers", type=positive_int, default=None, metavar="N",
                     help="actors, each holding one pipeline (default: one per local GPU, else 1)")
    ray.add_argument("--cpus-per-worker", type=positive_int, default=None, metavar="N",
                     help="CPUs reserved per actor, also its torch threads (default: the cluster's CPUs / workers)")
    parser.set_defaults(handler=run)


def _flatten(sources: Sequence[str], outputs: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    import numpy as np

    from ..tools.regress import stack_outputs

    stacked = stack_outputs(outputs)
    counts = stacked.pop("face_counts")
    return {"images": np.array(sources, dtype=str), "errors": np.array([o.get("error", "") for o in outputs], dtype=str),
            "face_counts": counts, "face_image": np.repeat(np.arange(len(outputs)), counts),
            "embeddings": stacked.pop("img_embedding"), **stacked}


def _json_line(source: str, output: dict[str, Any]) -> str:
    faces = [{"score": float(s), "box": [float(v) for v in b], "keypoints": [float(v) for v in k],
              "embedding": [float(v) for v in e]}
             for s, b, k, e in zip(output["scores"], output["boxes"], output["keypoints"], output["img_embedding"])]
    record: dict[str, Any] = {"image": source, "faces": faces}
    if "error" in output:
        record["error"] = output["error"]
    return json_text(record)  # use_det=False: NaN scores/keypoints -> null


def _summary(source: str, output: dict[str, Any]) -> str:
    source = printable(source)
    if "error" in output:
        return f"{source}: ERROR {printable(output['error'])}"
    if not len(output["scores"]):
        return f"{source}: no face"
    box = ", ".join(f"{v:.0f}" for v in output["boxes"][0])
    return (f"{source}: {len(output['scores'])} face(s); first: score {output['scores'][0]:.3f}, box [{box}], "
            f"embedding [{', '.join(f'{v:+.4f}' for v in output['img_embedding'][0][:4])}, ...]")


def _out_kind(out: str | None) -> str:
    """'print', 'stdout', 'npz', 'jsonl', 'parquet' or 'folder' (an existing folder, or a name without a suffix)."""
    if out is None:
        return "print"
    if out == "-":
        return "stdout"
    suffix = Path(out).suffix.lower()
    if not suffix:
        return "folder"
    if suffix in (".npz", ".jsonl", ".parquet"):
        return suffix[1:]
    raise UsageError(f"--out {out!r}: use a .npz, .jsonl or .parquet file name, a folder name (no suffix) for "
                     "Parquet shards, or '-' for JSON lines on stdout")


def _check_options(args: argparse.Namespace, kind: str) -> None:
    """Usage errors before any model loads."""
    from ..errors import FaceRowsError
    from ..tools.corpus.face_rows import shard_files

    if args.ray_address:
        args.ray = True
    if not args.ray and (args.workers is not None or args.cpus_per_worker is not None):
        raise UsageError("--workers and --cpus-per-worker need --ray; without it, embed runs in this process")
    if args.ray and kind != "folder":
        raise UsageError("--ray writes a folder of Parquet shards: give --out DIR (a folder name without a suffix)")
    if args.retry_errors and kind != "folder":
        raise UsageError("--retry-errors applies to a rows folder: give --out DIR (a folder name without a suffix)")
    if kind == "folder":
        check_output_folder(args.out, "--out")
        try:
            shard_files(args.out)  # an existing folder must be a rows folder: never write into someone else's
        except FaceRowsError as exc:
            raise UsageError(f"--out: {exc}") from None
    elif kind in ("npz", "jsonl", "parquet"):
        check_output_file(args.out, "--out", overwrite=args.overwrite)


def _run_metadata(args: argparse.Namespace, pipeline: Any, max_faces: Any) -> dict[str, Any]:
    from ..tools.corpus.embedding_runs import recorded_model
    from ..tools.regress import run_metadata

    return {"model": recorded_model(args.model), **run_metadata(pipeline, pipeline.preprocessor.settings.max_faces
                                                                if max_faces is KEEP else max_faces)}


def _default_workers(args: argparse.Namespace) -> int:
    """One per local GPU when the device asks for a GPU (Ray started here), else 1."""
    if args.ray_address or not (args.device in ("auto", "gpu") or args.device.startswith("cuda")):
        return 1
    import torch

    return max(1, torch.cuda.device_count())


def _run_ray(args: argparse.Namespace, sources: list[str], max_faces: Any) -> int:
    from ..errors import FaceRowsError
    from ..tools.corpus.ray_embed import MODEL_MAX_FACES, EmbedSpec, embed_with_ray

    model_dir = resolve_model_dir(args.model)  # downloads and hub errors here, once, not in every actor
    spec = EmbedSpec(model_dir=model_dir, model=args.model, detector=resolve_detector(args, model_dir),
                     device=args.device, precision=args.precision, det_max_side=args.det_max_side,
                     max_faces=MODEL_MAX_FACES if max_faces is KEEP else max_faces, batch_size=args.batch_size,
                     verbose=args.verbose, engine=getattr(args, "engine", None),
                     engine_dir=getattr(args, "engine_dir", None))
    try:  # the lock, then the model check, then --retry-errors, then Ray (embed_with_ray, in that order)
        summary = embed_with_ray(spec, sources, args.out, workers=args.workers or _default_workers(args),
                                 cpus_per_worker=args.cpus_per_worker, address=args.ray_address,
                                 shard_images=args.shard_size, progress=not args.no_progress,
                                 retry_errors=args.retry_errors)
    except FaceRowsError as exc:  # another run writing --out, or another model's rows in it
        raise UsageError(str(exc)) from None
    if args.retry_errors:
        _say_retried(args, summary.retried)
    print(summary.line(args.out))
    return _exit_code(summary.errors + summary.faceless)


def _say_retried(args: argparse.Namespace, removed: list[str]) -> None:
    print(f"--retry-errors: {len(removed)} error row(s) removed from {args.out!r}; embedding those images again",
          file=sys.stderr)


def _run_folder(args: argparse.Namespace, pipeline: Any, sources: list[str], max_faces: Any, progress: bool) -> int:
    """Single-process face rows into a resumable folder of shards (the same rows as --ray): the folder's write lock
    is held for the run; the model check comes before anything changes."""
    from ..errors import FaceRowsError
    from ..tools.corpus.rows_lock import holding_rows_folder

    try:
        with holding_rows_folder(args.out):
            return _run_folder_locked(args, pipeline, sources, max_faces, progress)
    except FaceRowsError as exc:  # another run writing --out, or another model's rows in it
        raise UsageError(str(exc)) from None


def _run_folder_locked(args: argparse.Namespace, pipeline: Any, sources: list[str], max_faces: Any,
                       progress: bool) -> int:
    import time

    from tqdm import tqdm

    from ..tools.corpus.face_rows import (check_folder_run, count_faceless, count_images, done_sources, drop_error_rows,
                                          face_rows, pending_sources, unique_sources, write_shard)

    started = time.perf_counter()
    metadata = _run_metadata(args, pipeline, max_faces)
    check_folder_run(args.out, metadata, f"--out {args.out!r}")
    if args.retry_errors:
        _say_retried(args, drop_error_rows(args.out, unique_sources(sources)))
    pending, skipped = pending_sources(sources, done_sources(args.out))
    images = faces = errors = faceless = 0
    with tqdm(total=len(pending), unit="image", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(pending), args.shard_size):
            chunk = pending[start : start + args.shard_size]
            outputs = run_images(pipeline, chunk, max_faces=max_faces, batch_size=args.batch_size)
            table = face_rows(chunk, outputs, metadata=metadata)
            write_shard(table, args.out)
            counts = count_images(table)
            images, faces, errors = images + counts[0], faces + counts[1], errors + counts[2]
            faceless += count_faceless(table)
            bar.update(len(chunk))
    seconds = time.perf_counter() - started
    print(f"{images} image(s) embedded, {skipped} already in {args.out!r} skipped, {faces} "
          f"face(s), {faceless} without a face, {errors} error(s), {seconds:.1f} s, "
          f"{images / seconds if seconds else 0:.2f} images/s on {pipeline.device_used} -> {printable(args.out)}")
    return _exit_code(errors + faceless)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..support.atomic_files import write_text_atomic, writing_file

    out = args.out
    kind = _out_kind(out)
    _check_options(args, kind)
    _check_extras(args, kind)
    sources, folders = expand_inputs(args.inputs)
    if kind in ("npz", "jsonl", "parquet"):
        check_not_an_input(out, "--out", sources)  # with --overwrite too
    max_faces = None if args.all_faces else KEEP
    if args.ray:
        return _run_ray(args, sources, max_faces)
    pipeline = open_pipeline(args, max_faces=max_faces)
    if kind == "folder":
        return _run_folder(args, pipeline, sources, max_faces, progress=folders and not args.no_progress)
    outputs = run_images(pipeline, sources, batch_size=args.batch_size, progress=folders and not args.no_progress)
    errors = sum("error" in o for o in outputs)
    faces = sum(len(o["scores"]) for o in outputs)
    faceless = sum("error" not in o and not len(o["scores"]) for o in outputs)
    if kind == "print":
        for source, output in zip(sources, outputs):
            print(_summary(source, output))
    elif kind in ("stdout", "jsonl"):
        lines = "\n".join(_json_line(s, o) for s, o in zip(sources, outputs)) + "\n"
        if out == "-":
            sys.stdout.write(lines)
        else:
            write_text_atomic(out, lines)
    elif kind == "parquet":
        from ..tools.corpus.face_rows import face_rows, write_face_rows

        write_face_rows(face_rows(sources, outputs, metadata=_run_metadata(args, pipeline, max_faces)), out)
    else:
        with writing_file(out) as tmp, open(tmp, "wb") as fh:  # a file object: savez adds no suffix
            np.savez_compressed(fh, **_flatten(sources, outputs),
                                metadata=np.array(json_text(_run_metadata(args, pipeline, max_faces))))
    where = "" if out in (None, "-") else f" -> {printable(out)}"
    print(f"{len(sources)} image(s), {faces} face(s), {faceless} without a face, {errors} unreadable, on "
          f"{pipeline.device_used}{where}", file=sys.stderr if out == "-" else sys.stdout)
    return _exit_code(errors + faceless)


def _check_extras(args: argparse.Namespace, kind: str) -> None:
    """The optional packages this run needs, before any work: pyarrow for Parquet, ray for --ray."""
    from .common import check_extras

    parquet = (("pyarrow", "ray", "face rows (Parquet)"),) if kind in ("parquet", "folder") else ()
    check_extras(args, extras=(("ray", "facemask embed --ray"),) if args.ray else (), modules=parquet)


def _exit_code(problems: int) -> int:
    """1 when an image could not be read or had no face, else 0 (:mod:`.exit_codes`)."""
    from .exit_codes import negative_if

    return negative_if(problems > 0)
