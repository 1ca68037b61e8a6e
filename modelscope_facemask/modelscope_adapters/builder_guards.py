"""Clear errors where ModelScope's ``pipeline()`` reads a model folder before this package's code runs.

``modelscope.pipelines.builder.pipeline`` (modelscope 1.40.2) first calls ``is_model_from_trusted_source(model)``
(a hub call for anything that looks like ``x/y``, e.g. ``~/x``), then ``is_official_hub_path(model)`` (a path
that does not exist is looked up on the hub as an id, or refused as "invalid model repo path") and then
``read_config(model)`` (a raw ``JSONDecodeError``, ``UnicodeDecodeError`` or ``TypeError`` for a broken
configuration.json, and an ``AttributeError`` when its ``pipeline`` is not an object). Both names are module globals of
the builder, looked up at call time, so :func:`install` wraps them there (idempotently). The wrappers only raise
where ModelScope's own code would certainly fail, and otherwise call the original unchanged, so other tasks'
pipelines behave as before:

* ``is_model_from_trusted_source`` and ``is_official_hub_path``: a string that is not an existing path and not of the shape ``owner/name`` raises
  :class:`~modelscope_facemask.errors.ModelSourceError` ("folder ... does not exist"), without a hub call.
* ``read_config`` of a local folder: a configuration.json that is not UTF-8 JSON holding an object, or whose
  ``pipeline`` is not an object, raises :class:`~modelscope_facemask.errors.ConfigurationError` naming the file. A
  FaceMask configuration (``pipeline.type``, ``model.type`` or ``preprocessor.type`` one of this package's names) is
  checked completely, as :func:`~modelscope_facemask.modelscope_adapters.configuration.read_configuration` does.
"""
from __future__ import annotations

import functools
import importlib
import os
from typing import Any, Callable

from .configuration import CONFIGURATION_FILE, parse_configuration, read_configuration
from ..errors import ConfigurationError, ModelSourceError
from ..metainfo import Models, Pipelines, Preprocessors
from ..model_files.model_folders import is_hub_id

_GUARD = "_facemask_guard"
FACEMASK_TYPES = frozenset({Models.facemask, Preprocessors.facemask_preprocessor, Pipelines.facemask,
                            Pipelines.builtin_facemask})


def check_model_argument(model: Any) -> None:
    """Raise :class:`ModelSourceError` for a string (or each string of a list) that is neither an existing path nor
    of the shape of a hub id."""
    for item in model if isinstance(model, list) else [model]:
        if not isinstance(item, str) or os.path.exists(item) or is_hub_id(item):
            continue
        if item and os.path.exists(os.path.expanduser(item)):
            raise ModelSourceError(f"model {item!r}: ModelScope's pipeline() does not expand '~'; pass "
                                   f"os.path.expanduser({item!r}) = {os.path.expanduser(item)!r}")
        raise ModelSourceError(
            f"model folder {item!r} does not exist ({os.path.abspath(item)!r}); it is not a hub id of the form "
            "'owner/name' either: check the path, or download the model first")


def is_facemask_configuration(config: dict[str, Any]) -> bool:
    """True when a section's ``type`` is one of this package's registered names."""
    return any(isinstance(config.get(key), dict) and config[key].get("type") in FACEMASK_TYPES
               for key in ("pipeline", "model", "preprocessor"))


def check_local_configuration(folder: str | os.PathLike) -> None:
    """Raise :class:`ConfigurationError` naming ``folder``'s configuration.json where ModelScope's ``pipeline()``
    would fail on it with a raw exception; FaceMask configurations are checked completely."""
    path = os.path.join(os.fspath(folder), CONFIGURATION_FILE)
    if not os.path.isfile(path):
        return  # ModelScope's own behaviour (it treats the folder as no model repository)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigurationError(f"{path!r} cannot be read ({exc.strerror or exc})") from None
    config = parse_configuration(raw, path, sections=("pipeline",))
    if not is_facemask_configuration(config):
        return
    read_configuration(folder)
    if not (config.get("pipeline") or {}).get("type"):
        raise ConfigurationError(
            f"{path!r} has no pipeline.type, so ModelScope's pipeline() cannot choose a pipeline for it: add "
            f'"pipeline": {{"type": "{Pipelines.builtin_facemask}"}}, or build FaceMaskPipeline(folder) directly')


def _guarded(original: Callable[..., Any], check: Callable[[Any], None]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(model: Any, *args: Any, **kwargs: Any) -> Any:
        check(model)
        return original(model, *args, **kwargs)

    setattr(wrapper, _GUARD, True)
    return wrapper


def _check_read_config(model: Any) -> None:
    if isinstance(model, (str, os.PathLike)) and os.path.isdir(model):
        check_local_configuration(model)


def install() -> None:
    """Wrap ``is_model_from_trusted_source``, ``is_official_hub_path`` and ``read_config`` in ModelScope's pipeline
    builder (idempotent). Safe to call while the builder module is still being imported (the registration hook
    runs right after its code): it is looked up in ``sys.modules``, not as an attribute of ModelScope's lazy
    ``modelscope.pipelines`` package."""
    builder = importlib.import_module("modelscope.pipelines.builder")

    if not getattr(builder.is_model_from_trusted_source, _GUARD, False):  # pipeline()'s first hub call
        builder.is_model_from_trusted_source = _guarded(builder.is_model_from_trusted_source, check_model_argument)
    if not getattr(builder.is_official_hub_path, _GUARD, False):
        builder.is_official_hub_path = _guarded(builder.is_official_hub_path, check_model_argument)
    if not getattr(builder.read_config, _GUARD, False):
        builder.read_config = _guarded(builder.read_config, _check_read_config)
