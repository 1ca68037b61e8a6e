"""``facemask embed``: embeddings of every face (or the largest) in images and folders, to .npz or .jsonl."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .common import (KEEP, UsageError, add_command, add_model_options, check_output_file, expand_inputs, json_text,
                     open_pipeline, positive_int, run_images)

DESCRIPTION = """Compute FaceMask embeddings for images, folders (searched recursively) and http(s) URLs.

Without --out, one summary line per image is printed. --out FILE.npz writes arrays: images (n,), errors (n,),
face_counts (n,), face_image (m,) (index into images), embeddings (m, 512), scores (m,), boxes (m, 4),
keypoints (m, 10) and metadata (JSON: model, device, precision, versions, weights sha256, embedding contract).
--out FILE.jsonl (or '-' for stdout) writes one JSON object per image. Exit code 1 when an image cannot be read."""


def register(commands: Any) -> None:
    parser = add_command(commands, "embed", help="embed the faces in images and folders", description=DESCRIPTION)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files, folders or http(s) URLs")
    add_model_options(parser)
    parser.add_argument("--out", help="FILE.npz, FILE.jsonl, or '-' (JSON lines on stdout)")
    parser.add_argument("--all-faces", action="store_true", help="every face (default: the model's choice, usually "
                        "the largest face only)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default 16)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (shown for folders)")
    parser.set_defaults(handler=run)


def _flatten(sources: Sequence[str], outputs: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    from ..regress import stack_outputs

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
    if "error" in output:
        return f"{source}: ERROR {output['error']}"
    if not len(output["scores"]):
        return f"{source}: no face"
    box = ", ".join(f"{v:.0f}" for v in output["boxes"][0])
    return (f"{source}: {len(output['scores'])} face(s); first: score {output['scores'][0]:.3f}, box [{box}], "
            f"embedding [{', '.join(f'{v:+.4f}' for v in output['img_embedding'][0][:4])}, ...]")


def run(args: argparse.Namespace) -> int:
    from ..atomic_files import write_text_atomic, writing_file
    from ..regress import run_metadata

    out = args.out
    if out is not None and out != "-":
        if Path(out).suffix.lower() not in (".npz", ".jsonl"):
            raise UsageError(f"--out {out!r}: use a .npz or .jsonl file name, or '-' for JSON lines on stdout")
        check_output_file(out, "--out")
    sources, folders = expand_inputs(args.inputs)
    max_faces = None if args.all_faces else KEEP
    pipeline = open_pipeline(args, max_faces=max_faces)
    outputs = run_images(pipeline, sources, batch_size=args.batch_size, progress=folders and not args.no_progress)
    errors = sum("error" in o for o in outputs)
    faces = sum(len(o["scores"]) for o in outputs)
    if out is None:
        for source, output in zip(sources, outputs):
            print(_summary(source, output))
    elif out == "-" or out.lower().endswith(".jsonl"):
        lines = "\n".join(_json_line(s, o) for s, o in zip(sources, outputs)) + "\n"
        if out == "-":
            sys.stdout.write(lines)
        else:
            write_text_atomic(out, lines)
    else:
        metadata = {"model": args.model, **run_metadata(pipeline, pipeline.preprocessor.settings.max_faces
                                                        if max_faces is KEEP else max_faces)}
        with writing_file(out) as tmp, open(tmp, "wb") as fh:  # a file object: savez adds no suffix
            np.savez_compressed(fh, **_flatten(sources, outputs), metadata=np.array(json_text(metadata)))
    where = "" if out in (None, "-") else f" -> {out}"
    print(f"{len(sources)} image(s), {faces} face(s), {errors} unreadable, on {pipeline.device_used}{where}",
          file=sys.stderr if out == "-" else sys.stdout)
    return 1 if errors else 0

