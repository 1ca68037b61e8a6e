"""What the subcommands share: model options, loading a pipeline with clear errors, image lists, batched runs."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..tools.corpus.embedding_runs import KEEP, embed_sources  # import-light: images are loaded in embed_sources
from ..tools.hub.probe import FACEMASK_MODEL_ID as DEFAULT_MODEL
from ..support.argument_types import positive_seconds  # noqa: F401  (re-exported for the subcommands)
from ..support.json_output import json_text, write_json  # noqa: F401  (re-exported for the subcommands)


class UsageError(Exception):
    """A problem with what the user asked for (missing file, unreachable hub, bad option): exit code 2."""


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--detector``, ``--device``, ``--precision``, ``--det-max-side``, ``--pad-batches``,
    ``--batched-postprocess``, ``--engine`` and ``--engine-dir``."""
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"ModelScope hub id (owner/name), hf://OWNER/NAME[@REVISION] (Hugging Face Hub) or local "
                             f"model folder (default: {DEFAULT_MODEL})")
    parser.add_argument("--detector", default=None,
                        help="RetinaFace detector to use instead of the one the model's configuration.json names "
                             "(hub id or local folder)")
    parser.add_argument("--device", default="auto",
                        help="'auto' (default: CUDA when available, else the CPU; 'gpu' means the same), 'cpu', 'cuda' "
                             "or 'cuda:N' (an explicit CUDA device must exist)")
    parser.add_argument("--precision", default=None, choices=("fp32", "fp16", "bf16", "int8"),
                        help="network precision: fp32 (default, or the model's configuration.json model.precision), "
                             "fp16 (CUDA only), bf16 (slow on CPUs without bf16 hardware) or int8 (--engine openvino "
                             "with the --engine-dir of `facemask quantize`)")
    parser.add_argument("--det-max-side", default=None, type=int, metavar="N",
                        help="opt-in: detect on a copy whose longer side is at most N px (e.g. 640; faster), results "
                             "in original pixels (default: the model's configuration.json, else the reference's rule: "
                             "images over 1500 px resized to 1000 px)")
    parser.add_argument("--pad-batches", default=None, action="store_true",
                        help="opt-in: detect images of different sizes together in padded batches (default: the "
                             "model's configuration.json preprocessor.pad_batches, else off: only equal sizes share "
                             "a batch)")
    parser.add_argument("--batched-postprocess", default=None, choices=("auto", "on", "off"),
                        help="post-process detections batched in torch on the device: auto (default, or the model's "
                             "configuration.json: on CUDA only), on or off (image by image in numpy)")
    parser.add_argument("--engine", default=None, choices=("torch", "onnxruntime", "openvino"),
                        help="what runs the networks: torch (default, or the model's configuration.json "
                             "model.engine), onnxruntime or openvino (CPU, fp32; openvino also bf16 on CPUs with bf16 hardware; "
                             "graphs from --engine-dir, else "
                             "exported on first use into the cache)")
    parser.add_argument("--engine-dir", default=None, metavar="DIR",
                        help="a folder written by `facemask export` for --engine onnxruntime/openvino, or by "
                             "`facemask quantize` for --precision int8")


def detection_options(args: argparse.Namespace) -> dict[str, Any]:
    """``pad_batches``/``batched_postprocess`` keywords from ``--pad-batches``/``--batched-postprocess`` (only those
    given: the others keep the model's configuration)."""
    options: dict[str, Any] = {}
    if getattr(args, "pad_batches", None):
        options["pad_batches"] = True
    choice = getattr(args, "batched_postprocess", None)
    if choice is not None:
        options["batched_postprocess"] = {"auto": None, "on": True, "off": False}[choice]
    return options


def resolve_model_dir(model: str, what: str = "model") -> str:
    """A local folder for ``model``: the folder itself, or ModelScope's snapshot of a hub id.

    The hub is probed first (a few seconds at most); when it does not answer, a snapshot already in ModelScope's
    cache is used, otherwise the error says what to do (instead of ModelScope's ~35 s of retries).
    """
    from ..errors import ModelSourceError
    from ..tools.hub.probe import hub_problem
    from ..model_files.model_folders import hf_model_dir, is_hub_id, local_model_dir

    if model.startswith("hf://"):  # a Hugging Face Hub repository, verified against its manifest.json
        try:
            return hf_model_dir(model, what=what)
        except ModelSourceError as exc:  # malformed reference, hub or cache failure
            raise UsageError(str(exc)) from None
    if os.path.isdir(os.path.expanduser(model)) or not is_hub_id(model):
        try:  # a local folder (checked for an interrupted download), or a missing path reported as such
            return local_model_dir(model, what=what)
        except ModelSourceError as exc:
            raise UsageError(str(exc)) from None
    problem = hub_problem(model)
    if problem is not None:
        if problem.hub_unreachable:
            from modelscope.hub.snapshot_download import snapshot_download

            try:
                return snapshot_download(model, local_files_only=True)
            except Exception:  # noqa: BLE001 - not in the cache
                pass
        raise UsageError(_problem_line(model, what, problem))
    try:
        return local_model_dir(model)
    except Exception as exc:  # noqa: BLE001 - ModelScope's client raises many types (HTTPError, ValueError, ...)
        option = "--model" if what == "model" else "--detector"
        raise UsageError(f"cannot download {what} {model!r} from the ModelScope hub: {type(exc).__name__}: {exc}; "
                         f"check the id, or run `modelscope download {model} --local-dir DIR` and pass {option} DIR"
                         ) from None


def _problem_line(model: str, what: str, problem: Any) -> str:
    """The one-line error for a model argument that cannot be used, ending with what to do; for an unreachable hub
    the full offline advice is logged (shown with -v)."""
    if not problem.hub_unreachable:
        return f"cannot use {what} {model!r}: {problem.message}"
    from ..support.log import logger
    from ..tools.hub.probe import offline_fix

    for line in problem.message.splitlines():  # the full offline advice, with -v
        logger.info("%s", line)
    reason = problem.reason if len(problem.reason) <= 200 else problem.reason[:197] + "..."
    option = "--model" if what == "model" else "--detector"
    return (f"cannot use {what} {model!r}: the ModelScope hub is not reachable ({reason}) and it is not in "
            f"ModelScope's cache; offline, `facemask demo` runs on sample photos; to use it, "
            f"{offline_fix(model, option)}")


def resolve_detector(args: argparse.Namespace, model_dir: str) -> str | None:
    """The detector folder to pass on: ``--detector`` or the configuration's, inside the model folder, a local
    folder, or a hub id (fetched now, so that hub problems are reported like the model's)."""
    from ..modelscope_adapters.configuration import facemask_settings, read_configuration, resolve_detector_dir

    settings = facemask_settings(read_configuration(model_dir))
    if not settings.use_det and args.detector is None:
        return None
    detector = os.path.expanduser(args.detector or settings.detector)
    if (Path(model_dir) / detector).is_dir() or os.path.isdir(detector):
        return str(resolve_detector_dir(detector, model_dir, from_configuration=args.detector is None))
    return resolve_model_dir(detector, "detector")


def pipeline_options(args: argparse.Namespace, *, max_faces: Any = KEEP) -> dict[str, Any]:
    """``FaceMaskPipeline`` keywords for ``--model``/``--detector``/``--device``/...: the model and detector
    resolved to local folders (downloaded when they are hub ids)."""
    model_dir = resolve_model_dir(args.model)
    kwargs = {} if max_faces is KEEP else {"max_faces": max_faces}
    return {"model": model_dir, "device": args.device, "detector_model": resolve_detector(args, model_dir),
            "precision": getattr(args, "precision", None), "det_max_side": getattr(args, "det_max_side", None),
            "engine": getattr(args, "engine", None), "engine_dir": getattr(args, "engine_dir", None),
            **detection_options(args), **kwargs}


def open_pipeline(args: argparse.Namespace, *, max_faces: Any = KEEP) -> Any:
    """The FaceMask pipeline for ``--model``/``--detector``/``--device``."""
    from ..modelscope_adapters.pipeline import FaceMaskPipeline

    return FaceMaskPipeline(**pipeline_options(args, max_faces=max_faces))


def untrained_warning(pipeline: Any) -> None:
    """Say so when the model declares untrained weights (its similarities are meaningless)."""
    from ..tools.hub.model_card import says_untrained

    if says_untrained(pipeline.model.model_dir):
        print("facemask: note: this model declares UNTRAINED weights: its similarities and decisions mean nothing",
              file=sys.stderr)


def open_preprocessor(args: argparse.Namespace, *, max_faces: Any = KEEP) -> Any:
    """Only the detector and alignment (no recognizer), for commands that do not embed."""
    from ..modelscope_adapters.preprocessor import FaceMaskPreprocessor

    model_dir = resolve_model_dir(args.model)
    kwargs = {} if max_faces is KEEP else {"max_faces": max_faces}
    return FaceMaskPreprocessor(model_dir, detector=resolve_detector(args, model_dir), device=args.device,
                                precision=getattr(args, "precision", None),
                                det_max_side=getattr(args, "det_max_side", None), engine=getattr(args, "engine", None),
                                engine_dir=getattr(args, "engine_dir", None), **detection_options(args), **kwargs)


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image entries under ``folder`` (recursive, sorted, hidden files and folders skipped; a dangling symlink or a
    FIFO is listed, and becomes an error of its own: :func:`~modelscope_facemask.faces.image_sources.image_paths_under`)."""
    from ..faces.image_sources import image_paths_under

    return image_paths_under(folder)


def expand_inputs(items: Iterable[str]) -> tuple[list[str], bool]:
    """Files, folders (expanded to their images) and URLs -> sources; True when a folder was given."""
    from ..faces.image_sources import IMAGE_SUFFIXES
    from ..tools.corpus.face_rows import is_url

    sources, any_folder, missing = [], False, []
    for item in items:
        if is_url(item):
            sources.append(item)
        elif os.path.isdir(item):
            found = image_files(item)
            if not found:
                raise UsageError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {item!r}")
            sources += [str(p) for p in found]
            any_folder = True
        elif os.path.exists(item):
            sources.append(item)  # a file; a FIFO or device becomes that item's "not a regular file" error
        elif os.path.islink(item):
            missing.append(f"{item!r} (a symbolic link to {os.readlink(item)!r}, which does not exist)")
        else:
            missing.append(repr(item))
    if missing:
        raise UsageError("no such file or folder: " + ", ".join(missing))
    return sources, any_folder


def run_images(pipeline: Any, sources: Sequence[str], *, max_faces: Any = KEEP, batch_size: int = 16,
               progress: bool = False) -> list[dict[str, Any]]:
    """The pipeline's outputs for ``sources``, ``batch_size`` images at a time (bounded memory), with a progress bar:
    :func:`modelscope_facemask.tools.corpus.embedding_runs.embed_sources`, the loop the library and the Ray actors
    share."""
    return embed_sources(pipeline, sources, max_faces=max_faces, batch_size=batch_size, progress=progress)


def check_output_file(path: str | os.PathLike, option: str) -> Path:
    """``path`` as a Path, or a :class:`UsageError` now (before any model loads) when it cannot be written:
    a folder in its place, or a parent that is a file or not writable. Missing parent folders are created later."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{option} {str(path)!r} is a folder; give a file name")
    return check_output_parent(target, option)


def check_output_parent(path: str | os.PathLike, option: str) -> Path:
    """``path`` as a Path, or a :class:`UsageError` when its parent folder is a file or not writable (the first
    existing ancestor is checked: missing folders are created later)."""
    target = Path(path)
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{option} {str(path)!r} cannot be created: {str(ancestor)!r} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {str(path)!r} cannot be created: the folder {str(ancestor)!r} is not writable")
    return target


def similarity_threshold(text: str) -> float:
    """A cosine-similarity threshold: a number in [-1, 1] (NaN and infinities refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [-1, 1], got {text!r}") from None
    if not -1.0 <= value <= 1.0:  # also false for NaN
        raise argparse.ArgumentTypeError(f"must be a number in [-1, 1] (cosine similarity), got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def max_faces_arg(text: str) -> int | None:
    """``all`` -> None, else a positive integer."""
    if text.lower() == "all":
        return None
    try:
        return positive_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'all', got {text!r}") from None


def add_command(commands: Any, name: str, *, help: str, description: str | None = None,
                epilog: str | None = None) -> argparse.ArgumentParser:
    """A subcommand parser with ``-v/--verbose`` (descriptions keep their line breaks)."""
    parser = commands.add_parser(name, help=help, description=description or help, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show INFO logs (device, weights files, ModelScope's own messages)")
    return parser


def check_extras(args: argparse.Namespace, *, extras: Iterable[tuple[str, str]] = (),
                 modules: Iterable[tuple[str, str, str]] = ()) -> None:
    """Before any work: the optional extras the command will need, as (extra, feature) pairs, single modules of one
    as (module, extra, feature), the engine's for ``--engine onnxruntime|openvino`` and huggingface-hub for an
    ``hf://`` model; otherwise MissingExtraError (exit 2), one line ending with the pip command."""
    from ..support.extras import require, require_extra

    engine = getattr(args, "engine", None)
    if engine in ("onnxruntime", "openvino"):
        from ..engines import require_engine

        require_engine(engine)
    if any(str(getattr(args, name, None) or "").startswith("hf://") for name in ("model", "detector")):
        require_extra("huggingface", "hf:// models (the Hugging Face Hub)")
    for extra, feature in extras:
        require_extra(extra, feature)
    for module, extra, feature in modules:
        require(module, extra, feature)
