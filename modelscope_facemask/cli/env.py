"""``facemask env``: versions, the device and precision that would run, hub and cache settings."""
from __future__ import annotations

import argparse
import importlib.util
import os
from typing import Any

from .common import add_command, json_text

OPTIONAL = {"matplotlib": "evaluate --plot", "onnxruntime": "detector conversion checks",
            "skimage": "reference alignment in the tests"}
#: what each extra of setup.py is for, as ``env`` prints it
EXTRA_USES = {"onnx": "--engine onnxruntime", "openvino": "--engine openvino, export --format openvino",
              "gallery": "gallery, identify, evaluate --gallery", "ray": "embed --ray, Parquet face rows",
              "huggingface": "hf:// models, publish --hub huggingface"}


def register(commands: Any) -> None:
    parser = add_command(commands, "env", help="versions, device and precision, hub settings",
                         description="Print package, torch and ModelScope versions, the device and precision a "
                                     "pipeline would run with, and the hub and cache settings (the token is never "
                                     "printed, only whether it is set).")
    parser.add_argument("--device", default="auto",
                        help="the device to resolve (default 'auto', as the pipeline: CUDA when available, else "
                             "the CPU)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                        help="the precision to check on that device (default fp32, as the pipeline)")
    parser.add_argument("--check-hub", action="store_true", help="also probe whether the ModelScope hub answers")
    from .json_option import add_json_options
    from .output_paths import add_overwrite_option

    add_json_options(parser, "everything env reports")
    add_overwrite_option(parser, "an existing --json-out file")
    parser.set_defaults(handler=run)


def collect(device: str, check_hub: bool, precision: str = "fp32") -> dict[str, Any]:
    """Everything ``env`` reports."""
    import torch

    from ..engines.devices import resolve_device
    from ..engines import installed_engines
    from ..errors import ConfigurationError
    from ..engines.precision import check_precision_on_device, cpu_has_bf16, precision_dtype
    from ..tools.hub.probe import hub_reachable, resolve_endpoint
    from ..tools.regress import package_versions, runtime_precision

    used = resolve_device(device)
    cuda = torch.cuda.is_available()
    info: dict[str, Any] = {
        "versions": package_versions(),
        "package_path": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "cuda": {"available": cuda, "torch_cuda": torch.version.cuda,
                 "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []},
        "device_requested": device, "device": str(used),
        "precision": runtime_precision(used, precision_dtype(precision)), "precision_problem": None,
        "cpu_bf16": cpu_has_bf16(),
        "torch_threads": torch.get_num_threads(),
        "engines": installed_engines(),
        "optional": {name: importlib.util.find_spec(name) is not None for name in OPTIONAL},
        "extras": _extras(),
        "hub": {"endpoint": resolve_endpoint(), "token_set": bool(os.environ.get("MODELSCOPE_API_TOKEN", "").strip())},
        "caches": {"MODELSCOPE_CACHE": os.environ.get("MODELSCOPE_CACHE", "~/.cache/modelscope (default)"),
                   "FACEMASK_CACHE": os.environ.get("FACEMASK_CACHE", "~/.cache/modelscope-facemask (default)"),
                   "FACEMASK_ENGINE_CACHE": os.environ.get("FACEMASK_ENGINE_CACHE",
                                                           "FACEMASK_CACHE/engines (default)")},
    }
    try:
        check_precision_on_device(precision, used)
    except ConfigurationError as exc:
        info["precision_problem"] = str(exc)
    if check_hub:
        info["hub"]["reachable"], info["hub"]["probe"] = hub_reachable()
    return info


def _extras() -> list[dict[str, Any]]:
    """Every package of the optional extras: installed version or None (missing), and the pip command."""
    from ..support.extras import PACKAGE, extras_status

    return [{**entry, "install": f"pip install '{PACKAGE}[{entry['extras'][0]}]'"} for entry in extras_status()]


def _extras_lines(extras: list[dict[str, Any]]) -> list[str]:
    """One line per package of the optional extras: installed (version) or MISSING with the pip command."""
    width = max(len(entry["package"]) for entry in extras)
    lines = ["optional extras:"]
    for entry in extras:
        uses = "; ".join(EXTRA_USES.get(extra, extra) for extra in entry["extras"])
        state = f"installed {entry['version']}" if entry["version"] else "MISSING"
        fix = "" if entry["version"] else f"; {entry['install']}"
        lines.append(f"  {entry['package']:<{width}}  {state:<20}  [{'/'.join(entry['extras'])}] {uses}{fix}")
    return lines


def run(args: argparse.Namespace) -> int:
    from .json_option import check_json_out, emit_json, say_written

    check_json_out(args)
    info = collect(args.device, args.check_hub, args.precision)
    emit_json(args, info)
    if args.json:
        return 0
    versions = info["versions"]
    print(f"modelscope-facemask {versions.pop('modelscope-facemask')} ({info['package_path']})")
    print("  " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    cuda = info["cuda"]
    print(f"CUDA: {'available: ' + ', '.join(cuda['devices']) if cuda['available'] else 'not available'} "
          f"(torch built with CUDA {cuda['torch_cuda'] or 'none'})")
    print(f"device: {info['device_requested']!r} -> {info['device']}; precision {info['precision']}; "
          f"torch threads {info['torch_threads']}; CPU bf16 hardware: {'yes' if info['cpu_bf16'] else 'no'}")
    if info["precision_problem"]:
        print(f"precision {args.precision!r} is refused here: {info['precision_problem']}")
    print("engines: " + ", ".join(f"{name} {version}" if version else f"{name} (not installed)"
                                  for name, version in info["engines"].items()))
    missing = [f"{name} (for {use})" for name, use in OPTIONAL.items() if not info["optional"][name]]
    print("optional packages missing: " + (", ".join(missing) if missing else "none"))
    print("\n".join(_extras_lines(info["extras"])))
    hub = info["hub"]
    reach = f"; {'reachable' if hub['reachable'] else 'NOT reachable'}: {hub['probe']}" if "reachable" in hub else ""
    print(f"hub: {hub['endpoint']}; MODELSCOPE_API_TOKEN {'set' if hub['token_set'] else 'not set'}{reach}")
    print("caches: " + ", ".join(f"{k}={v}" for k, v in info["caches"].items()))
    say_written(args, "environment")
    return 0
