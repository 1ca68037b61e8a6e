"""The ``onnxruntime`` engine: an exported ONNX graph on ONNX Runtime's CPU execution provider, fp32."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import require_engine
from .export import INPUT_NAME


def engine_threads() -> int:
    """The intra-op thread count the exported engines use: ``torch.get_num_threads()``, which follows
    ``torch.set_num_threads`` and ``OMP_NUM_THREADS`` (read by torch when it starts)."""
    return max(1, torch.get_num_threads())


class OnnxRuntimeEngine:
    """One ONNX Runtime session for one graph; inputs are float32 NCHW arrays, outputs float32 CPU tensors."""

    name = "onnxruntime"

    def __init__(self, graph: str | os.PathLike, *, source: str = "") -> None:
        ort = require_engine("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = engine_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.graph = Path(graph)
        self.threads = options.intra_op_num_threads
        self.session = ort.InferenceSession(str(self.graph), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.source = f"{self.graph}{f' ({source})' if source else ''}"

    def __call__(self, batch: Any) -> tuple[torch.Tensor, ...]:
        array = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch
        array = np.ascontiguousarray(array, dtype=np.float32)
        return tuple(torch.from_numpy(o) for o in self.session.run(None, {INPUT_NAME: array}))
