"""The ``openvino`` engine: an exported graph (OpenVINO IR ``.xml``, or ONNX) compiled for OpenVINO's CPU plugin,
with fp32 inference precision by default (OpenVINO would otherwise pick bf16 on CPUs that have it), or bf16 when
asked for (the same fp32 graph; OpenVINO runs its convolutions and matmuls in bf16 on AMX / avx512_bf16)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import require_engine
from .onnxruntime_engine import engine_threads


#: our precision name -> OpenVINO's INFERENCE_PRECISION_HINT (int8: the quantized graph's int8 operations run in
#: int8 whatever the hint; the operations it left in floating point run in fp32)
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


class OpenVinoEngine:
    """One compiled model for one graph; inputs are float32 NCHW arrays, outputs float32 CPU tensors."""

    name = "openvino"

    def __init__(self, graph: str | os.PathLike, *, source: str = "", precision: str = "fp32") -> None:
        ov = require_engine("openvino")
        self.graph = Path(graph)
        self.threads = engine_threads()
        self.precision = precision
        config = {"INFERENCE_NUM_THREADS": self.threads, "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision],
                  "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = ov.Core().compile_model(str(self.graph), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.source = f"{self.graph}{f' ({source})' if source else ''}"
        #: True when the graph is a ``facemask quantize`` int8 graph (set by the int8 loader)
        self.int8 = False

    def __call__(self, batch: Any) -> tuple[torch.Tensor, ...]:
        array = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch
        array = np.ascontiguousarray(array, dtype=np.float32)
        results = self.request.infer({0: array})
        return tuple(torch.from_numpy(np.array(results[output], dtype=np.float32, copy=True))
                     for output in self.compiled.outputs)
