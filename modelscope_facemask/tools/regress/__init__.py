"""Reference-embedding regression: store what the pipeline produced for a few images, later check it still does.

``facemask regress create`` records a reference file and ``facemask regress check`` compares a new run with it.
The modules, by concern:

* :mod:`.provenance`: what a run depends on (versions, device, precision, weights, the embedding contract);
* :mod:`.reference_file`: the reference ``.npz`` (format, writing, reading and validating, its images);
* :mod:`.record`: making a reference from pipeline outputs;
* :mod:`.tolerances`: the tolerance presets (with their measurements) and how one is chosen;
* :mod:`.comparison`: the check itself, field by field, and its outcome (pass, regression, dependency change);
* :mod:`.report`: the human-readable report.

Every public name is importable from this package.
"""
from __future__ import annotations

from .comparison import CheckReport, ImageResult, check_reference, compare_values, one_minus_cos, recognizer_values
from .provenance import (contract_sha256, embedding_contract, package_versions, pipeline_precision, run_metadata,
                         runtime_precision, weights_metadata)
from .record import command_line, create_reference, stack_outputs
from .reference_file import (MAX_REFERENCE_BYTES, REFERENCE_FORMAT, NonFinite, Reference, ReferenceError,
                             describe_values, load_reference, locate_images, nan_allowed, non_finite_values,
                             save_reference)
from .report import format_report
from .tolerances import (CROSS_DEVICE, DEPENDENCY_CHANGE, NUMERIC_DEPENDENCIES, SAME_DEVICE, Tolerances,
                         choose_tolerances, dependency_changes)

__all__ = [
    "CROSS_DEVICE", "DEPENDENCY_CHANGE", "MAX_REFERENCE_BYTES", "NUMERIC_DEPENDENCIES", "REFERENCE_FORMAT",
    "SAME_DEVICE", "CheckReport", "ImageResult", "NonFinite", "Reference", "ReferenceError", "Tolerances",
    "check_reference", "choose_tolerances", "command_line", "compare_values", "contract_sha256", "create_reference",
    "dependency_changes", "describe_values", "embedding_contract", "format_report", "load_reference", "locate_images",
    "nan_allowed", "non_finite_values", "one_minus_cos", "package_versions", "pipeline_precision",
    "recognizer_values", "run_metadata", "runtime_precision", "save_reference", "stack_outputs", "weights_metadata",
]
