"""Peak memory of the whole pipeline on one big image, in a fresh process (``ru_maxrss``).

Model: the small deterministic recognizer (units 1/2/2/1) + the real mobilenet0.25 RetinaFace (from PyPI, cached).
Inputs: a BGR array, or a PNG/JPEG file of a gradient, ``HEIGHT x WIDTH``. Prints the peak RSS above the RSS just
before the call, as a multiple of the decoded RGB image (3 bytes per pixel). Each measurement runs in a child process.

    python benchmarks/peak_memory.py array 20000 10000      # at the default limit of 200 M pixels
    FACEMASK_MAX_IMAGE_PIXELS=300000000 python benchmarks/peak_memory.py array 20000 15000
    python benchmarks/peak_memory.py png 12000 12000
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORK = Path(tempfile.gettempdir()) / "facemask-peak-memory"


def current_rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def build_model(folder: Path) -> None:
    from modelscope_facemask.model_files.assets import retinaface_mobilenet_state_dict
    from modelscope_facemask.tools.hub.repository_writers import facemask_configuration, write_detector_repo, write_facemask_repo
    from modelscope_facemask.nets.retinaface import MOBILENET025_CONFIG
    from modelscope_facemask.tools.demo.synthetic_weights import synthetic_recognizer

    units = (1, 2, 2, 1)
    write_facemask_repo(folder, synthetic_recognizer(units).state_dict(),
                        facemask_configuration(detector="detector", units=units))
    write_detector_repo(folder / "detector", retinaface_mobilenet_state_dict(), MOBILENET025_CONFIG)


def gradient(height: int, width: int):
    import numpy as np

    image = np.empty((height, width, 3), np.uint8)
    image[:] = (np.arange(width, dtype=np.uint32) * 255 // width).astype(np.uint8)[None, :, None]
    return image


def measure(kind: str, height: int, width: int) -> None:
    import numpy as np
    import torch
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks

    import modelscope_facemask  # noqa: F401  (registers the plugin)

    torch.set_num_threads(2)
    pipe = pipeline(Tasks.face_recognition, str(WORK / "model"), device="cpu")
    pipe(np.zeros((64, 64, 3), np.uint8))  # warm up
    source = gradient(height, width) if kind == "array" else str(WORK / f"{kind}_{height}x{width}.{kind}")
    before = current_rss_mib()
    start = time.perf_counter()
    try:
        outcome = f"{len(pipe(source)['scores'])} faces"
    except Exception as exc:  # a refused image is a result too
        outcome = f"{type(exc).__name__}: {exc}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    decoded = height * width * 3 / 2**20
    print(f"{kind} {height}x{width}: {outcome} in {time.perf_counter() - start:.1f} s; RSS before the call "
          f"{before:.0f} MiB, peak {peak:.0f} MiB: {peak - before:.0f} MiB above = "
          f"{(peak - before) / decoded:.2f} x the decoded RGB image ({decoded:.0f} MiB)")


def main(argv: list[str]) -> None:
    kind, height, width = argv[0], int(argv[1]), int(argv[2])
    if kind not in ("array", "png", "jpg"):
        raise SystemExit("usage: peak_memory.py array|png|jpg HEIGHT WIDTH")
    WORK.mkdir(parents=True, exist_ok=True)
    if not (WORK / "model" / "detector").is_dir():
        build_model(WORK / "model")
    if kind != "array" and not (WORK / f"{kind}_{height}x{width}.{kind}").exists():
        from PIL import Image

        Image.fromarray(gradient(height, width)).save(WORK / f"{kind}_{height}x{width}.{kind}")
    subprocess.run([sys.executable, __file__, "--child", kind, str(height), str(width)], check=True, env=os.environ)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        measure(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main(sys.argv[1:])
