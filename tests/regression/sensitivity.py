"""Measure what the default tolerances catch: one-weight perturbations of the test model vs the committed reference.

    python tests/regression/sensitivity.py            # prints one line per perturbation and a summary

For every BatchNorm ``running_mean`` (first element + 0.05) and every convolution (weights x 1.001) of the
recognizer, and of the detector, the check of ``reference.npz`` is run with the default (same-device) tolerances.
Also measured: run-to-run and thread-count noise (1 thread vs the default). The numbers in README.md come from here.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from inputs import DETECTOR_DIR, build_model, portraits_dir  # noqa: E402

from modelscope_facemask import FaceMaskPipeline  # noqa: E402
from modelscope_facemask.model_files.checkpoints import TORCH_WEIGHTS, read_state_dict, save_state_dict  # noqa: E402
from modelscope_facemask.tools.regress import check_reference, load_reference, locate_images  # noqa: E402


def _check(model: Path, reference, images) -> tuple[bool, dict[str, float]]:
    pipeline = FaceMaskPipeline(str(model), device="cpu", max_faces=reference.metadata["contract"]["max_faces"])
    report = check_reference(pipeline, reference, images)
    worst = {k: max(r.worst.get(k, 0.0) for r in report.images) for k in
             ("embedding", "recognizer", "landmarks", "boxes", "scores")}
    return report.passed, worst


def _line(label: str, passed: bool, worst: dict[str, float]) -> str:
    values = "  ".join(f"{k} {v:.2g}" for k, v in worst.items())
    return f"{'pass ' if passed else 'CAUGHT'}  {label:<55} {values}"


def main() -> int:
    reference = load_reference(HERE / "reference.npz")
    images = locate_images(reference, portraits_dir())
    with tempfile.TemporaryDirectory() as tmp:
        base = build_model(Path(tmp) / "base")
        print(_line("unchanged model", *_check(base, reference, images)))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        print(_line("unchanged model, 1 thread", *_check(base, reference, images)))
        torch.set_num_threads(threads)
        counts = {"recognizer": [0, 0], "detector": [0, 0]}
        for role, weights in (("recognizer", base / TORCH_WEIGHTS), ("detector", base / DETECTOR_DIR / TORCH_WEIGHTS)):
            state = read_state_dict(weights)
            targets = [(k, "running_mean[0] + 0.05") for k in state if k.endswith("running_mean")]
            targets += [(k, "x 1.001") for k, v in state.items() if v.ndim == 4]
            for key, how in targets:
                model = Path(tmp) / "perturbed"
                shutil.rmtree(model, ignore_errors=True)
                shutil.copytree(base, model)
                changed = dict(state)
                value = changed[key].clone()
                if how.startswith("running_mean"):
                    value[0] += 0.05
                else:
                    value *= 1.001
                changed[key] = value
                save_state_dict(changed, model / weights.relative_to(base))
                passed, worst = _check(model, reference, images)
                counts[role][0 if passed else 1] += 1
                print(_line(f"{role} {key} {how}", passed, worst))
        for role, (passed, caught) in counts.items():
            print(f"{role}: {caught} of {passed + caught} one-weight perturbations caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
