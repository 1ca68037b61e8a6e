"""``facemask pack``: a publishable ModelScope repository (card, weights, detector, manifest)."""
from __future__ import annotations

import argparse
from typing import Any

from .common import add_command, resolve_model_dir

DESCRIPTION = """Build a ModelScope model repository in OUT from a FaceMask model (hub id or folder):
  configuration.json  this project's card (model/preprocessor types, detector, max_faces)
  README.md           model card: YAML front matter (tasks, frameworks, license, tags), usage, output contract,
                      model facts computed here, evaluation numbers only from --evaluation
  pytorch_model.pt, model.safetensors   the recognizer weights (same tensors, strictly checked)
  retinaface_<backbone>/                the detector, when --detector is given or the model keeps it inside
  manifest.json       sha256 + size of every file; loading verifies the files it reads
The weights are loaded back from OUT before the command succeeds."""


def register(commands: Any) -> None:
    parser = add_command(commands, "pack", help="build a publishable model repository", description=DESCRIPTION)
    parser.add_argument("--model", required=True, help="hub id or local model folder to pack")
    parser.add_argument("--detector", help="RetinaFace detector (hub id or folder) to put inside the repository")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to create (must be new or empty)")
    parser.add_argument("--model-id", help="OWNER/NAME to show in the card's usage (default: a placeholder)")
    parser.add_argument("--license", default="apache-2.0", help="license for the card (default apache-2.0)")
    parser.add_argument("--untrained", action="store_true",
                        help="the weights are untrained test weights: the card says so prominently")
    parser.add_argument("--evaluation", metavar="RESULT.json", help="`facemask evaluate --json` output whose "
                        "numbers the card reports")
    parser.add_argument("--force", action="store_true", help="replace OUT if it is an earlier pack output")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..pack import pack_model

    detector = resolve_model_dir(args.detector, "detector") if args.detector else None
    result = pack_model(resolve_model_dir(args.model), args.out, detector=detector, model_id=args.model_id,
                        license=args.license, untrained=args.untrained, evaluation=args.evaluation, force=args.force)
    where = f"inside the repository ({result.detector}/)" if result.detector_inside else f"hub id {result.detector}"
    print(f"packed {args.model} -> {result.folder} (detector: {where})")
    for name, size in sorted(result.files.items()):
        print(f"  {size:>13,}  {name}")
    print(f"  {sum(result.files.values()):>13,}  total ({len(result.files)} files + manifest.json)")
    print(f"next: facemask publish {result.folder} --model-id {args.model_id or 'OWNER/NAME'} --dry-run")
    return 0
