"""Making a reference: running the pipeline on the images and stacking its outputs into reference arrays."""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .provenance import run_metadata
from .reference_file import REFERENCE_FORMAT, Reference, ReferenceError


def pipeline_outputs(pipeline: Any, paths: Sequence[Path], max_faces: int | None) -> list[dict[str, Any]]:
    """The pipeline's outputs for ``paths`` (in order), as ``create`` and ``check`` both run it."""
    return pipeline.run_batch([str(p) for p in paths], max_faces=max_faces)


def create_reference(pipeline: Any, images: Mapping[str, Path], *, max_faces: int | None,
                     model: str = "", images_dir: str = "", command: str = "") -> Reference:
    """Run ``pipeline`` on ``images`` ({name: path}) and record everything a later check compares."""
    from ...model_files.manifest import file_sha256

    names = sorted(images)
    outputs = pipeline_outputs(pipeline, [images[n] for n in names], max_faces)
    failed = [f"{n}: {o['error']}" for n, o in zip(names, outputs) if "error" in o]
    if failed:
        raise ReferenceError("cannot make a reference from images that fail: " + "; ".join(failed))
    metadata = {"format": REFERENCE_FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "model": model, "images_dir": images_dir, "command": command, **run_metadata(pipeline, max_faces)}
    stacked = stack_outputs(outputs)
    return Reference(
        images=names, image_sha256=[file_sha256(images[n]) for n in names], face_counts=stacked["face_counts"],
        boxes=stacked["boxes"], landmarks=stacked["keypoints"], scores=stacked["scores"],
        embeddings=stacked["img_embedding"], metadata=metadata)


def stack_outputs(outputs: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Pipeline outputs of many images as flat arrays: ``face_counts`` (n,) and, face rows of all images in order,
    ``img_embedding`` (m, 512), ``scores`` (m,), ``boxes`` (m, 4), ``keypoints`` (m, 10)."""
    from ...modelscope_adapters.pipeline import empty_output

    empty = empty_output()
    stacked = {key: np.concatenate([value] + [np.asarray(o[key], np.float32) for o in outputs])
               for key, value in empty.items()}
    return {"face_counts": np.array([len(o["scores"]) for o in outputs], np.int64), **stacked}


def command_line() -> str:
    """This process's command line, for the record."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
