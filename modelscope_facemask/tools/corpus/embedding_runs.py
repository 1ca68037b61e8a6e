"""The one chunked embedding loop: many image sources through a FaceMask pipeline, a bounded number at a time.

The library, ``facemask embed``/``evaluate`` (through ``cli.common.run_images``) and the Ray actors of
:mod:`modelscope_facemask.tools.corpus.ray_embed` all call :func:`embed_sources`. When the pipeline decodes ahead (its
``decode_ahead``, on by default on CUDA), the next chunk's images are decoded in a thread while the current chunk
computes (:func:`~modelscope_facemask.faces.decode_ahead.chunks_ahead`: at most two chunks decoded at a time).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from ...faces.decode_ahead import chunks_ahead

KEEP = object()  # "use the model's configured max_faces"


def recorded_model(model: str) -> str:
    """How a run records ``--model`` (face rows, galleries): a local folder as its absolute path, so that the
    record is usable from any working folder; a hub id (or ``hf://`` reference) unchanged."""
    path = os.path.expanduser(model)
    return os.path.abspath(path) if model and not model.startswith("hf://") and os.path.isdir(path) else model


def embed_sources(pipeline: Any, sources: Sequence[Any], *, max_faces: Any = KEEP, batch_size: int = 16,
                  progress: bool = False) -> list[dict[str, Any]]:
    """The pipeline's outputs for ``sources`` (one dict per source, in order; a bad source gives an output with an
    ``error`` and no faces), ``batch_size`` images at a time (bounded memory), with an optional progress bar."""
    from tqdm import tqdm

    from ...faces.images import load_image

    kwargs = {} if max_faces is KEEP else {"max_faces": max_faces}
    if getattr(pipeline, "decode_ahead", False):
        chunks = chunks_ahead(sources, batch_size, load_image)
    else:
        chunks = ((list(sources[start : start + batch_size]), None) for start in range(0, len(sources), batch_size))
    outputs: list[dict[str, Any]] = []
    with tqdm(total=len(sources), unit="image", disable=not progress, dynamic_ncols=True) as bar:
        for chunk, loaded in chunks:
            outputs += pipeline.run_batch(chunk, **kwargs, **({} if loaded is None else {"loaded": loaded}))
            bar.update(len(chunk))
    return outputs
