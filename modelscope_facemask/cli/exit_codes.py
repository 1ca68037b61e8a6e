"""The exit codes of every ``facemask`` command: one table, the same for all (tests/test_exit_codes.py checks each
command against it).

====  ==================  ============================================================================================
code  name                meaning
====  ==================  ============================================================================================
0     SUCCESS             the command did what was asked. An answer is not a failure: ``compare`` saying "different
                          people", ``identify`` answering "unknown", ``evaluate`` counting pairs or probes without a
                          face in its metrics.
1     NEGATIVE_RESULT     the command ran and found a negative result in the data, reported per item (the other items
                          are still done): an image without a face or that cannot be read (embed, identify, gallery
                          build/add: "not enrolled"), no face in an image it compares or annotates (compare,
                          annotate), a non-finite similarity (compare), a regression (regress check), an upload that
                          failed or a hub copy that differs (publish), no face found (demo).
2     USAGE_ERROR         the command could not do its work: a bad option, a missing or unusable input (file, image
                          named on its own to compare or annotate, model, detector, reference, gallery, pairs file),
                          an output it refuses to write, an unreachable hub or package registry, a missing optional
                          extra (the message names the pip command), or any unexpected error (one line; the
                          traceback with -v). Detected before any work wherever it can be.
3     DEPENDENCY_CHANGE   ``regress check`` only: the outputs moved as an upgrade of OpenCV, Pillow, torch or numpy
                          moves them (same weights and contract); refresh the reference after an intended upgrade.
130   INTERRUPTED         Ctrl-C.
====  ==================  ============================================================================================
"""
from __future__ import annotations

SUCCESS = 0
NEGATIVE_RESULT = 1
USAGE_ERROR = 2
DEPENDENCY_CHANGE = 3
INTERRUPTED = 130

#: the table in one line, for ``--help`` epilogs
SUMMARY = ("Exit codes: 0 success (also 'different people', 'unknown'); 1 a negative result the command found "
           "(an image without a face or unreadable, a regression, a failed upload); 2 a usage error or any error "
           "that stopped the command (bad option, missing input, refused output, unreachable hub, missing extra); "
           "3 regress check: a dependency change.")


def negative_if(found: bool) -> int:
    """:data:`NEGATIVE_RESULT` when ``found`` (a negative result was reported), else :data:`SUCCESS`."""
    return NEGATIVE_RESULT if found else SUCCESS


__all__ = ["DEPENDENCY_CHANGE", "INTERRUPTED", "NEGATIVE_RESULT", "SUCCESS", "SUMMARY", "USAGE_ERROR", "negative_if"]
