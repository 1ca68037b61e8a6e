"""Corpus-scale embedding on Ray Data (extra ``[ray]``): paths -> an actor pool of FaceMask pipelines -> Parquet
face-row shards, resumable.

Design: the sources go into a Ray dataset (``ray.data.from_items``); ``map_batches`` runs them on a fixed pool of
actors (``concurrency=workers``), each holding ONE pipeline built once in ``__init__`` (one GPU per actor when the
cluster has GPUs) and calling the same embed loop as the single-process command
(:func:`modelscope_facemask.tools.corpus.embedding_runs.embed_sources`). Actors read and decode the files themselves
with the pipeline's own loader, so rows and error messages equal ``facemask embed``'s and a bad file becomes an error
row instead of a failed read task. The driver streams the result blocks and writes shards of about ``shard_images``
images atomically into the output folder, so an interrupted run loses at most the shard in progress and a rerun skips
every source already in a shard. The driver holds the folder's write lock
(:mod:`modelscope_facemask.tools.corpus.rows_lock`) for the whole run, and checks the model, contract and precision
against the rows already there before Ray starts.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ...support.extras import require

METADATA_COLUMN = "_facemask_run"  # the actors' run metadata travels with the rows; the driver moves it to the schema
MAX_INPUT_BLOCKS = 1000
MODEL_MAX_FACES = "model"  # EmbedSpec.max_faces: the model's configured max_faces


@dataclass(frozen=True)
class EmbedSpec:
    """What each actor needs to build its pipeline (picklable: sent to every actor)."""

    model_dir: str
    model: str = ""  # the --model the user gave (hub id or folder), recorded in the metadata
    detector: str | None = None
    device: str = "auto"
    precision: str | None = None
    det_max_side: int | None = None
    max_faces: int | None | str = MODEL_MAX_FACES  # an int, None (every face) or MODEL_MAX_FACES
    batch_size: int = 16
    threads: int = 1  # torch threads per actor
    verbose: bool = False  # the actors' INFO logs (model loading, device) too
    engine: str | None = None  # --engine (torch, onnxruntime, openvino); None: the pipeline's default
    engine_dir: str | None = None


@dataclass
class RayEmbedSummary:
    """What a run did: images embedded now, skipped (already in the folder), faces, error rows, time, workers."""

    images: int = 0
    skipped: int = 0
    faces: int = 0
    errors: int = 0
    faceless: int = 0  # images read without an error, in which no face was found
    seconds: float = 0.0
    workers: int = 0
    shards: list[str] = field(default_factory=list)
    first_result_seconds: float = 0.0  # start-up: Ray, the actors' pipelines and the first batch
    first_result_images: int = 0
    retried: list[str] = field(default_factory=list)  # sources whose error rows were removed (retry_errors)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_images_per_second(self) -> float:
        """Images/s after the first result (without Ray's and the actors' start-up); 0 when unknown."""
        seconds = self.seconds - self.first_result_seconds
        images = self.images - self.first_result_images
        return images / seconds if seconds > 0 and images > 0 else 0.0

    def line(self, out: str | os.PathLike) -> str:
        head = f"{self.images} image(s) embedded, {self.skipped} already in {str(out)!r} skipped"
        if not self.images and not self.shards:  # nothing was left to do: Ray was not started
            return f"{head}; nothing to do (Ray not started)"
        steady = (f" ({self.steady_images_per_second:.2f} images/s after start-up)"
                  if self.steady_images_per_second else "")
        return (f"{head}, {self.faces} face(s), {self.faceless} without a face, {self.errors} error(s), "
                f"{self.seconds:.1f} s, "
                f"{self.images_per_second:.2f} images/s{steady} on {self.workers} worker(s), "
                f"{len(self.shards)} new shard(s)")


def build_pipeline(spec: EmbedSpec) -> Any:
    """The FaceMask pipeline ``spec`` describes (what each actor holds)."""
    from ...modelscope_adapters.pipeline import FaceMaskPipeline

    kwargs = {} if spec.max_faces == MODEL_MAX_FACES else {"max_faces": spec.max_faces}
    return FaceMaskPipeline(spec.model_dir, device=spec.device, detector_model=spec.detector,
                            precision=spec.precision, det_max_side=spec.det_max_side,
                            engine=spec.engine, engine_dir=spec.engine_dir, **kwargs)


def pipeline_metadata(spec: EmbedSpec, pipeline: Any) -> dict[str, Any]:
    """The run metadata of the rows ``pipeline`` (built from ``spec``) writes."""
    from ..regress import run_metadata

    max_faces = pipeline.preprocessor.settings.max_faces if spec.max_faces == MODEL_MAX_FACES else spec.max_faces
    return {"model": spec.model, **run_metadata(pipeline, max_faces)}


class EmbedActor:
    """A Ray Data actor: one FaceMask pipeline, built once; batches of ``source`` paths -> face-row tables."""

    def __init__(self, spec: EmbedSpec) -> None:
        import torch

        torch.set_num_threads(max(1, spec.threads))
        for name in ("modelscope", "modelscope.facemask"):  # warnings (a skipped image) reach the driver; INFO if -v
            logging.getLogger(name).setLevel(logging.INFO if spec.verbose else logging.WARNING)
        self.spec = spec
        self.pipeline = build_pipeline(spec)
        self.max_faces = (self.pipeline.preprocessor.settings.max_faces if spec.max_faces == MODEL_MAX_FACES
                          else spec.max_faces)
        self.metadata = json.dumps(pipeline_metadata(spec, self.pipeline), sort_keys=True)

    def __call__(self, batch: Mapping[str, Any]) -> Any:
        import pyarrow as pa

        from .embedding_runs import embed_sources
        from .face_rows import face_rows

        sources = [str(s) for s in batch["source"]]
        paths = [str(p) for p in batch["path"]]  # absolute: a worker's working folder is not the driver's
        outputs = embed_sources(self.pipeline, paths, max_faces=self.max_faces, batch_size=self.spec.batch_size)
        table = face_rows(sources, outputs)
        return table.append_column(METADATA_COLUMN, pa.array([self.metadata] * table.num_rows, pa.string()))


def check_folder_model(spec: EmbedSpec, out: str | os.PathLike, *, same_machine: bool = True) -> None:
    """Before Ray starts and before anything changes: raise :class:`~modelscope_facemask.errors.FaceRowsError`
    when the rows already in ``out`` come from another model, contract or precision than ``spec``'s. Builds one
    pipeline in the driver (only when ``out`` holds rows) and frees it.

    ``same_machine=False`` (a cluster at an address): the driver may have no GPU, so its pipeline is built on the
    CPU in fp32 and only the weights and the contract are compared here; the precision is checked on the actors'
    first rows, before any shard is written."""
    import gc

    from .face_rows import check_same_run, folder_metadata

    existing = folder_metadata(out)
    if existing is None:
        return
    if not same_machine:
        spec = EmbedSpec(**{**spec.__dict__, "device": "cpu", "precision": "fp32"})
    pipeline = build_pipeline(spec)
    try:
        metadata = pipeline_metadata(spec, pipeline)
    finally:
        on_cuda = getattr(pipeline.device_used, "type", "cpu") == "cuda"
        del pipeline
        gc.collect()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()
    if not same_machine:
        metadata = {**metadata, "precision": existing.get("precision")}
    check_same_run(metadata, existing, f"--out {str(out)!r}")


def connect(address: str | None, *, num_cpus: int | None = None, quiet: bool = True) -> bool:
    """Start a local Ray instance (no dashboard, warnings only) or connect to the cluster at ``address``; a Ray
    already initialised in this process is used as it is. Returns True when this call started or connected."""
    ray = require("ray", "ray", "embedding with Ray Data")
    if ray.is_initialized():
        return False
    level = logging.WARNING if quiet else logging.INFO
    if address:
        ray.init(address=address, logging_level=level, log_to_driver=True)
    else:
        # address="local": always a new local instance; without it Ray would join the cluster recorded by an earlier
        # `ray start` on this machine (/tmp/ray/ray_current_cluster), even one that has stopped since
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 logging_level=level, log_to_driver=True)
    return True


def worker_resources(device: str, workers: int, cpus_per_worker: int | None) -> tuple[int, float]:
    """(CPUs, GPUs) per actor: CPUs default to the cluster's CPUs shared among ``workers``; one GPU per actor when
    the device asks for a GPU and the cluster has at least one."""
    import ray

    resources = ray.cluster_resources()
    cpus = cpus_per_worker or max(1, int(resources.get("CPU", 1) // workers))
    wants_gpu = device in ("auto", "gpu") or device.startswith("cuda")  # engines.devices.AUTOMATIC, or CUDA
    return cpus, (1.0 if wants_gpu and resources.get("GPU", 0) >= 1 else 0.0)


def embed_with_ray(spec: EmbedSpec, sources: Sequence[str], out: str | os.PathLike, *, workers: int,
                   cpus_per_worker: int | None = None, address: str | None = None, shard_images: int = 1000,
                   progress: bool = True, on_shard: Callable[[Path], None] | None = None,
                   retry_errors: bool = False) -> RayEmbedSummary:
    """Embed ``sources`` on a Ray actor pool of ``workers`` pipelines into the rows folder ``out`` (Parquet shards,
    :mod:`modelscope_facemask.tools.corpus.face_rows`); sources already in ``out``'s shards are skipped (compared by
    resolved path), and with ``retry_errors`` their error rows are removed first so that they are embedded again.

    The folder's write lock is held for the whole run. Before Ray starts and before anything changes, the rows
    already in ``out`` are checked against ``spec``'s model, contract and precision (:func:`check_folder_model`).
    Without ``address`` (and no Ray initialised in this process) Ray starts locally and is shut down afterwards.
    Raises :class:`~modelscope_facemask.errors.FaceRowsError` when ``out`` is not a rows folder, is being written
    by another run, or holds rows of another model, contract or precision; a bad image only gives its error row.
    """
    from .rows_lock import holding_rows_folder

    with holding_rows_folder(out):
        check_folder_model(spec, out, same_machine=not address)
        return _embed_locked(spec, sources, out, workers=workers, cpus_per_worker=cpus_per_worker, address=address,
                             shard_images=shard_images, progress=progress, on_shard=on_shard,
                             retry_errors=retry_errors)


def _embed_locked(spec: EmbedSpec, sources: Sequence[str], out: str | os.PathLike, *, workers: int,
                  cpus_per_worker: int | None, address: str | None, shard_images: int, progress: bool,
                  on_shard: Callable[[Path], None] | None, retry_errors: bool) -> RayEmbedSummary:
    """:func:`embed_with_ray` once the lock is held and the model checked."""
    ray = require("ray", "ray", "embedding with Ray Data")

    from .face_rows import done_sources, drop_error_rows, folder_metadata, pending_sources, unique_sources

    started = time.perf_counter()
    spec = _portable_spec(spec)
    retried = drop_error_rows(out, unique_sources(sources)) if retry_errors else []
    pending, skipped = pending_sources(sources, done_sources(out))
    summary = RayEmbedSummary(skipped=skipped, workers=workers, retried=retried)
    if not pending:
        return summary
    existing = folder_metadata(out)
    started_ray = connect(address)
    try:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = progress
        rows = _embedded_rows(ray, spec, pending, workers=workers, cpus_per_worker=cpus_per_worker)
        writer = _ShardWriter(out, summary, on_shard)
        try:
            for block in rows.iter_batches(batch_size=None, batch_format="pyarrow"):
                if block.num_rows == 0:
                    continue
                if not summary.first_result_seconds:
                    summary.first_result_seconds = time.perf_counter() - started
                    summary.first_result_images = writer.images_of(block)
                block, metadata = _with_run_metadata(block, existing, out)
                if existing is None:
                    existing = metadata
                writer.add(block, shard_images)
        finally:
            writer.flush()  # rows of finished images are kept even when the run is interrupted
    finally:
        if started_ray:
            ray.shutdown()
    summary.seconds = time.perf_counter() - started
    return summary


def _portable_spec(spec: EmbedSpec) -> EmbedSpec:
    """``spec`` with the model recorded as the rows record it and local folders made absolute (workers may run in
    another folder)."""
    from .embedding_runs import recorded_model

    spec = EmbedSpec(**{**spec.__dict__, "model": recorded_model(spec.model)})
    if os.path.isdir(spec.model_dir):
        spec = EmbedSpec(**{**spec.__dict__, "model_dir": os.path.abspath(spec.model_dir)})
    for name in ("detector", "engine_dir"):
        value = getattr(spec, name)
        if value is not None and os.path.isdir(value):
            spec = EmbedSpec(**{**spec.__dict__, name: os.path.abspath(value)})
    return spec


def _embedded_rows(ray: Any, spec: EmbedSpec, pending: Sequence[str], *, workers: int,
                   cpus_per_worker: int | None) -> Any:
    """The Ray dataset of face-row blocks of ``pending`` (absolute paths or URLs), embedded on a pool of
    ``workers`` :class:`EmbedActor`; every worker gets work."""
    cpus, gpus = worker_resources(spec.device, workers, cpus_per_worker)
    if gpus:
        spec = EmbedSpec(**{**spec.__dict__, "device": "cuda"})  # Ray gives each actor its own CUDA_VISIBLE_DEVICES
    spec = EmbedSpec(**{**spec.__dict__, "threads": cpus})
    batch = max(1, min(spec.batch_size, math.ceil(len(pending) / workers)))  # every worker gets work
    blocks = max(1, min(math.ceil(len(pending) / batch), MAX_INPUT_BLOCKS))
    items = [{"source": s, "path": s} for s in pending]  # pending_sources: absolute paths or URLs
    dataset = ray.data.from_items(items, override_num_blocks=blocks)
    return dataset.map_batches(EmbedActor, fn_constructor_args=(spec,), batch_size=batch, batch_format="numpy",
                               compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus, num_gpus=gpus)


def _with_run_metadata(block: Any, existing: Mapping[str, Any] | None,
                       out: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """(``block`` with its actors' run metadata moved from the rows into the schema, that metadata), after checking
    that every actor's run and the rows already in ``out`` (``existing``, when there are any) are the same run."""
    from .face_rows import METADATA_KEY, check_same_run

    runs = set(block.column(METADATA_COLUMN).unique().to_pylist())
    metadata = json.loads(min(runs))
    for other in runs:  # actors on different nodes may differ in device or threads, never in model
        check_same_run(metadata, json.loads(other), "a Ray worker's rows")
    check_same_run(metadata, metadata if existing is None else existing, f"the rows already in {str(out)!r}")
    block = block.drop_columns([METADATA_COLUMN]).replace_schema_metadata(
        {METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})
    return block, metadata


class _ShardWriter:
    """Buffers face-row blocks and writes them as one shard of ``out`` once they hold enough images, counting what
    it wrote in ``summary``."""

    def __init__(self, out: str | os.PathLike, summary: RayEmbedSummary,
                 on_shard: Callable[[Path], None] | None) -> None:
        self.out, self.summary, self.on_shard = out, summary, on_shard
        self.buffered: list[Any] = []
        self.buffered_images = 0

    @staticmethod
    def images_of(block: Any) -> int:
        """How many images the rows of ``block`` are of."""
        from .face_rows import count_images

        return count_images(block)[0]

    def add(self, block: Any, shard_images: int) -> None:
        """Buffer ``block``; write the shard once the buffer holds ``shard_images`` images or more."""
        self.buffered.append(block)
        self.buffered_images += self.images_of(block)
        if self.buffered_images >= shard_images:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered (if anything) as one shard."""
        import pyarrow as pa

        from .face_rows import count_faceless, count_images, write_shard

        if self.buffered:
            table = pa.concat_tables(self.buffered)
            images, faces, errors = count_images(table)
            path = write_shard(table, self.out)
            summary = self.summary
            summary.images, summary.faces, summary.errors = (summary.images + images, summary.faces + faces,
                                                             summary.errors + errors)
            summary.faceless += count_faceless(table)
            summary.shards.append(path.name)
            if self.on_shard is not None:
                self.on_shard(path)
        self.buffered, self.buffered_images = [], 0
