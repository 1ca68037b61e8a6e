"""The detection record that flows between detector, face choice, alignment and outputs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, in original-image pixels, rows aligned.

    boxes: (N, 4) float32 ``[x1, y1, x2, y2]``; scores: (N,) float32; landmarks: (N, 10) float32
    ``[x0, y0, ..., x4, y4]`` (left eye, right eye, nose, left mouth corner, right mouth corner).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.scores)
        if self.boxes.shape != (n, 4) or self.landmarks.shape != (n, 10) or self.scores.shape != (n,):
            raise ValueError(
                f"inconsistent detection arrays: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                f"landmarks {self.landmarks.shape}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "Detections":
        """No faces."""
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 10), np.float32))

    def select(self, index: np.ndarray | list[int] | slice) -> "Detections":
        """The rows at ``index`` (an index array, list or slice), in that order."""
        return Detections(self.boxes[index], self.scores[index], self.landmarks[index])

    @property
    def landmarks_5x2(self) -> np.ndarray:
        """Landmarks as (N, 5, 2)."""
        return self.landmarks.reshape(-1, 5, 2)
