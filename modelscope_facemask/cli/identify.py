"""``facemask identify``: every face in each image searched against a gallery, each with its top-k identities."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ..support.printable import printable
from .common import (UsageError, add_command, add_model_options, expand_inputs, json_text, open_pipeline,
                     positive_int, similarity_threshold, untrained_warning)
from .gallery import add_search_options, apply_search_options, model_default


def _description() -> str:
    from ..tools.gallery import DEFAULT_THRESHOLD  # the package's constant: no FAISS, no numpy at parse time

    return f"""Identify every face in images, folders (recursive) and http(s) URLs against gallery G (1:N).

Each face's embedding is searched in G; the best-scoring identities (cosine similarity; --aggregate best: an
identity's best image, mean: its mean template, the normalised mean of its embeddings) are listed, top-k per face.
The answer is the rank-1 identity when its score is >= the threshold, else "unknown". The default threshold
{DEFAULT_THRESHOLD} is an UNCALIBRATED placeholder: calibrate it on your own probes with
  facemask evaluate --gallery G --probes SRC
which prints the thresholds for false-positive identification rates 1e-2 and 1e-3.
The model defaults to the gallery's; another recognizer or embedding contract is refused.
Exit code 1 when an image cannot be read or has no face (the others are still reported; "unknown" is not a
failure), 2 on a usage error."""


def register(commands: Any) -> None:
    from .json_option import add_json_options
    from .output_paths import add_overwrite_option

    parser = add_command(commands, "identify", help="search the faces in images against a gallery (1:N)",
                         description=_description())
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files, folders or http(s) URLs")
    parser.add_argument("--gallery", required=True, metavar="G", help="gallery folder (`facemask gallery build`)")
    parser.add_argument("--top-k", type=positive_int, default=5, metavar="K", help="identities per face (default 5)")
    parser.add_argument("--threshold", type=similarity_threshold, default=None, metavar="T",
                        help="open-set decision threshold on the score, in [-1, 1] (default: an uncalibrated "
                             "placeholder, see above)")
    parser.add_argument("--aggregate", choices=("best", "mean"), default="best",
                        help="per-identity score: best image (default) or mean template")
    add_search_options(parser)
    add_json_options(parser, "every image's faces and candidates (the summary line goes to stderr)")
    add_overwrite_option(parser, "an existing --json-out file")
    add_model_options(parser)
    model_default(parser, "the gallery's model")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default 16)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (shown for folders)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..tools.corpus.embedding_runs import embed_sources
    from ..tools.gallery.face_gallery import DEFAULT_THRESHOLD, FaceGallery, GalleryModel
    from .common import check_extras
    from .exit_codes import negative_if
    from .json_option import check_json_out, emit_json, say_written, text_stream

    check_extras(args, extras=[("gallery", "the face gallery")])
    sources, folders = expand_inputs(args.inputs)
    check_json_out(args, reads=sources, folders={args.gallery: "the gallery being read"})
    gallery = FaceGallery.load(args.gallery)  # a bad gallery fails before the model loads
    if len(gallery) == 0:
        raise UsageError(f"gallery {args.gallery!r} is empty: enrol images with `facemask gallery add`")
    apply_search_options(gallery, args)
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    args.model = args.model or gallery.model.model
    pipeline = open_pipeline(args, max_faces=None)
    untrained_warning(pipeline)
    gallery.check_model(GalleryModel.of_pipeline(pipeline, args.model))
    outputs = embed_sources(pipeline, sources, max_faces=None, batch_size=args.batch_size,
                            progress=folders and not args.no_progress and not args.json)
    faces = [o["img_embedding"] for o in outputs if "error" not in o and len(o["scores"])]
    answers = gallery.identify(np.concatenate(faces) if faces else np.zeros((0, gallery.dim), np.float32),
                               top_k=args.top_k, threshold=threshold, aggregate=args.aggregate)
    records = _records(sources, outputs, answers)
    emit_json(args, {"gallery": args.gallery, "model": args.model, "threshold": threshold,
                     "threshold_is_default": args.threshold is None, "aggregate": args.aggregate,
                     "top_k": args.top_k, "images": records})
    if not args.json:
        for record in records:
            _print_record(record)
    print(_summary(records, args.gallery, pipeline.device_used), file=text_stream(args))
    if args.threshold is None and not args.json:
        print(f"note: the default threshold {DEFAULT_THRESHOLD} is an uncalibrated placeholder; calibrate it with "
              "`facemask evaluate --gallery G --probes SRC` and pass --threshold", file=sys.stderr)
    say_written(args, "results")
    return negative_if(any("error" in record for record in records))


def _records(sources: list[str], outputs: list[dict[str, Any]], answers: list[Any]) -> list[dict[str, Any]]:
    """One record per image: its faces with their answers and candidates, or its error ("no face found")."""
    records, start = [], 0
    for source, output in zip(sources, outputs):
        record: dict[str, Any] = {"image": source, "faces": []}
        if "error" in output:
            record["error"] = output["error"]
        elif not len(output["scores"]):
            record["error"] = "no face found"
        for score, box in zip(output["scores"], output["boxes"]):
            answer = answers[start]
            start += 1
            best = answer.candidates[0].score if answer.candidates else None
            record["faces"].append({"box": [float(v) for v in box], "det_score": float(score),
                                    "score": float(score),  # deprecated alias of det_score (until the next release)
                                    "identity": answer.identity, "similarity": best,
                                    "candidates": [_candidate(c) for c in answer.candidates]})
        records.append(record)
    return records


def _candidate(candidate: Any) -> dict[str, Any]:
    """A candidate as the JSON shows it: ``similarity`` (cosine), ``score`` its deprecated alias (one release)."""
    return {"identity": candidate.identity, "similarity": candidate.score, "score": candidate.score,
            "source": candidate.source, "image_id": candidate.image_id}


def _summary(records: list[dict[str, Any]], gallery: str, device: Any) -> str:
    """The run in one line, as ``embed`` prints it: images, faces identified and unknown, problems, device."""
    faces = [face for record in records for face in record["faces"]]
    known = sum(face["identity"] is not None for face in faces)
    faceless = sum(record.get("error") == "no face found" for record in records)
    unreadable = sum("error" in record for record in records) - faceless
    return (f"{len(records)} image(s), {len(faces)} face(s): {known} identified, {len(faces) - known} unknown; "
            f"{faceless} without a face, {unreadable} unreadable; gallery {printable(gallery)}, on {device}")


def _print_record(record: dict[str, Any]) -> None:
    image = printable(record["image"])
    if "error" in record:
        print(f"{image}: {'ERROR ' if record['error'] != 'no face found' else ''}{printable(record['error'])}")
        return
    print(f"{image}: {len(record['faces'])} face(s)")
    for index, face in enumerate(record["faces"]):
        box = ", ".join(f"{v:.0f}" for v in face["box"])
        top = face["candidates"][0] if face["candidates"] else None
        answer = printable(face["identity"]) if face["identity"] is not None else "unknown"
        best = f" (best {printable(top['identity'])} {top['similarity']:.4f})" if top and face["identity"] is None \
            else f" ({top['similarity']:.4f})" if top else ""
        print(f"  face {index} [{box}] detection score {face['det_score']:.3f}: {answer}{best}")
        for rank, candidate in enumerate(face["candidates"], start=1):
            print(f"    {rank}. {printable(candidate['identity'])}  {candidate['similarity']:.4f}  "
                  f"{printable(candidate['source'])}")
