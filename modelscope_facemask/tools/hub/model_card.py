"""The README.md model card of a packed FaceMask repository: YAML front matter + usage, output contract, facts.

Every number on the card is computed at packing time (parameter counts, file sizes) or comes from a
``facemask evaluate --json`` result the packer passes in; nothing is copied from elsewhere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ...modelscope_adapters.configuration import is_untrained_demo_model
from ...nets.iresnet import DEPTH_UNITS
from ...version import __version__

DEFAULT_LICENSE = "apache-2.0"
PLACEHOLDER_MODEL_ID = "<owner>/<name>"
#: the Hugging Face ``library_name`` (the pip package that loads the repository)
LIBRARY_NAME = "modelscope-facemask"
#: one of the Hugging Face Hub's pipeline tags (its task list, huggingface.co/tasks): images in, embeddings out
HF_PIPELINE_TAG = "image-feature-extraction"
TAGS = ("face-recognition", "masked-face-recognition", "FaceMask", "RetinaFace", "IResNet", "modelscope-facemask")


@dataclass(frozen=True)
class CardFacts:
    """What the card states about one packed repository."""

    model_id: str
    units: tuple[int, int, int, int]
    parameters: int
    detector: str  # a folder inside the repository or a hub id
    detector_inside: bool
    detector_name: str | None
    detector_parameters: int | None
    max_faces: int | None
    file_sizes: dict[str, int]
    license: str = DEFAULT_LICENSE
    untrained: bool = False
    evaluation: dict[str, Any] | None = None
    evaluation_source: str | None = None
    extra_tags: tuple[str, ...] = field(default_factory=tuple)


def front_matter(facts: CardFacts) -> dict[str, Any]:
    """The card's YAML metadata, valid for both hubs: Hugging Face's ``library_name``, ``pipeline_tag``,
    ``license`` and ``tags``, and ModelScope's ``tasks``, ``domain``, ``frameworks`` and ``backbone``."""
    depth = {units: layers for layers, units in DEPTH_UNITS.items()}.get(tuple(facts.units))
    backbone = f"IResNet-{depth}" if depth else "IResNet-" + "-".join(str(u) for u in facts.units)
    tags = list(TAGS) + [t for t in facts.extra_tags if t not in TAGS]
    if facts.untrained:
        tags.append("untrained")
    return {"library_name": LIBRARY_NAME, "pipeline_tag": HF_PIPELINE_TAG, "license": facts.license, "tags": tags,
            "tasks": ["face-recognition"], "domain": ["cv"], "frameworks": ["pytorch"], "backbone": [backbone]}


def read_front_matter(text: str) -> dict[str, Any]:
    """The YAML metadata at the top of a model card (empty when there is none)."""
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---", 4)
    if end < 0:
        return {}
    data = yaml.safe_load(text[4:end])
    return data if isinstance(data, dict) else {}


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 1e5 else f"{size:,} bytes"


def _evaluation_section(facts: CardFacts) -> list[str]:
    lines = ["## Evaluation", ""]
    if facts.untrained:
        lines += ["None: these weights are untrained, so there is nothing to measure.", ""]
    if facts.evaluation is None:
        if not facts.untrained:
            lines += ["No accuracy figures are claimed for these weights. Measure them on your own labelled pairs "
                      "(CSV `image_a,image_b,same`):", "",
                      f"    facemask evaluate --pairs PAIRS.csv --model {facts.model_id}", ""]
        return lines
    ev = facts.evaluation
    source = f" on `{facts.evaluation_source}`" if facts.evaluation_source else ""
    lines += [f"Measured with `facemask evaluate`{source}: {ev['genuine_pairs']} same-person and "
              f"{ev['impostor_pairs']} different-person pairs.", "",
              "| metric | value | threshold |", "| --- | --- | --- |",
              f"| ROC AUC | {ev['roc_auc']:.4f} | |",
              f"| EER | {ev['eer']:.4f} | {ev['eer_threshold']:.4f} |"]
    for point in ev["operating_points"]:
        if point["tar"] is None:
            lines.append(f"| TAR @ FAR {point['far_target']:g} | n/a ({point['note']}) | |")
        else:
            lines.append(f"| TAR @ FAR {point['far_target']:g} | {point['tar']:.4f} | {point['threshold']:.4f} |")
    return lines + [""]


def render_model_card(facts: CardFacts) -> str:
    """The complete README.md text."""
    return "\n".join([*_heading_section(facts), *_usage_section(facts), *_output_contract_section(),
                      *_model_section(facts), *_evaluation_section(facts), *_files_section(facts)])


def _heading_section(facts: CardFacts) -> list[str]:
    """The YAML front matter, the title, the UNTRAINED warning (when so) and what the model does."""
    meta = yaml.safe_dump(front_matter(facts), sort_keys=False, allow_unicode=True).strip()
    lines = ["---", meta, "---", "", "# FaceMask face recognition (RetinaFace + IResNet)", ""]
    if facts.untrained:
        lines += ["> **UNTRAINED WEIGHTS.** The recognizer holds deterministic synthetic weights made for testing "
                  "the packaging and the pipeline. Its embeddings are valid 512-d unit vectors but mean nothing: "
                  "similarities between faces are not identity evidence.", ""]
    return lines + [
        "Face recognition in the layout of ModelScope's `damo/cv_resnet_face-recognition_facemask`: RetinaFace "
        "detects faces and five landmarks, each face is aligned to 112x112 on the ArcFace template, and an IResNet "
        "maps it to an L2-normalised 512-d embedding. Cosine similarity (the dot product) compares faces.", "",
    ]


def _usage_section(facts: CardFacts) -> list[str]:
    """Python and command-line usage, from either hub."""
    return [
        "## Usage", "",
        "```python",
        "# pip install modelscope-facemask",
        "import numpy as np",
        "from modelscope.pipelines import pipeline",
        "from modelscope.utils.constant import Tasks",
        "import modelscope_facemask  # registers the FaceMask pipeline with ModelScope",
        "",
        "",
        "# from the ModelScope hub",
        f"p = pipeline(Tasks.face_recognition, '{facts.model_id}')",
        "# or from the Hugging Face Hub: a verified snapshot in huggingface_hub's cache",
        "from modelscope_facemask.model_files.model_folders import hf_model_dir",
        f"p = pipeline(Tasks.face_recognition, hf_model_dir('hf://{facts.model_id}'))",
        "",
        "a = p('a.jpg')['img_embedding']; b = p('b.jpg')['img_embedding']",
        "print(float(np.dot(a[0], b[0])))  # cosine similarity of the largest faces",
        "```", "",
        "Command line (`pip install modelscope-facemask`), from either hub:", "",
        f"    facemask compare a.jpg b.jpg --model {facts.model_id}          # ModelScope",
        f"    facemask compare a.jpg b.jpg --model hf://{facts.model_id}     # Hugging Face",
        f"    facemask embed photos/ --model hf://{facts.model_id}@main --out embeddings.npz", "",
        "A Hugging Face download honours `HF_HUB_OFFLINE=1` (cache only); either way every file is checked against "
        "`manifest.json` before use.", "",
        "`compare`'s default threshold is a placeholder; calibrate it on your own pairs with `facemask evaluate`.", "",
    ]


def _output_contract_section() -> list[str]:
    """The keys, shapes and meaning of the pipeline's output."""
    return [
        "## Output contract", "",
        "Per image, rows aligned, coordinates in original-image pixels (N = number of faces, 0 when none):", "",
        "| key | shape, dtype | meaning |", "| --- | --- | --- |",
        "| `img_embedding` | (N, 512) float32 | L2-normalised embeddings |",
        "| `scores` | (N,) float32 | detector confidence |",
        "| `boxes` | (N, 4) float32 | `[x1, y1, x2, y2]` |",
        "| `keypoints` | (N, 10) float32 | x, y of left eye, right eye, nose, left and right mouth corner |", "",
        "A list input gives a list of such dicts (batched).", "",
    ]


def _model_section(facts: CardFacts) -> list[str]:
    """The recognizer, its input and embedding, the detector and how many faces per image."""
    units = "/".join(str(u) for u in facts.units)
    if facts.detector_inside:
        detector = (f"RetinaFace {facts.detector_name}, {facts.detector_parameters:,} parameters, inside this "
                    f"repository (`{facts.detector}/`): one download, no other repository needed")
    else:
        detector = f"RetinaFace from the hub repository `{facts.detector}` (downloaded on first use)"
    choice = "the largest face" if facts.max_faces == 1 else ("all faces" if facts.max_faces is None
                                                               else f"the {facts.max_faces} largest faces")
    return [
        "## Model", "",
        "| | |", "| --- | --- |",
        f"| recognizer | IResNet, units {units} per stage, {facts.parameters:,} parameters |",
        "| input | aligned 112x112 RGB face, `(x / 255 - 0.5) / 0.5` |",
        "| embedding | 512-d float32, L2-normalised |",
        f"| detector | {detector} |",
        f"| faces per image | {choice} (`max_faces` option) |",
        "",
    ]


def _files_section(facts: CardFacts) -> list[str]:
    """Every file with its size, what the manifest guarantees, and the packer's version and the licence."""
    return [
        "## Files", "",
        "| file | size |", "| --- | --- |",
        *[f"| `{name}` | {_mb(size)} |" for name, size in sorted(facts.file_sizes.items())],
        "",
        "`manifest.json` lists the sha256 and size of every file; loading with modelscope-facemask verifies the "
        "files it reads against it. `model.safetensors` and `pytorch_model.pt` hold the same tensors "
        "(the loader prefers `model.safetensors`).", "",
        f"Packed with modelscope-facemask {__version__}. License: {facts.license}.", "",
    ]


def says_untrained(model_dir: str | os.PathLike) -> bool:
    """True when a model folder declares untrained weights: its card's ``untrained`` tag (``facemask pack
    --untrained``) or the offline demo's marker in configuration.json."""
    readme = Path(model_dir) / "README.md"
    tags: list[str] = []
    if readme.is_file():
        try:
            tags = read_front_matter(readme.read_text(encoding="utf-8")).get("tags") or []
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            pass
    return "untrained" in tags or is_untrained_demo_model(model_dir)
