"""Batches of mixed-size detector inputs: bucket the sizes into a few padded shapes (opt-in ``pad_batches``).

Each network input (mean-subtracted planes) is placed at the top-left of its bucket's shape and the rest is filled
with 0. After mean subtraction 0 is the mean colour (B, G, R = 104, 117, 123): the padded area is a flat mean-grey
field, which is also what the network's own zero padding at an unpadded border stands for. The anchors of an image
are those of the cells its own (unpadded) input would have (:func:`.batched_postprocess.valid_anchor_index`); they
are decoded with the image's own size, so only the network outputs differ from the unpadded path: at the image's
right and bottom border the convolutions see mean-grey instead of zeros, and the FPN's nearest-neighbour upsampling
maps cells differently when a side is not a multiple of 32 px. Measured on real portraits in the README.
"""
from __future__ import annotations

from typing import Sequence

#: the coarsest stride of RetinaFace's levels: padded sides are multiples of it
PAD_MULTIPLE = 32
#: a bucket accepts an input whose own padded area is at least this fraction of the bucket's area
MIN_FILL = 0.8


def padded_size(height: int, width: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
    """(height, width) rounded up to multiples of ``multiple``."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def bucket_sizes(
    sizes: Sequence[tuple[int, int]], *, multiple: int = PAD_MULTIPLE, min_fill: float = MIN_FILL
) -> list[tuple[tuple[int, int], list[int]]]:
    """Group input sizes (height, width) into a few shapes: ``[(shape, member indices), ...]``.

    Largest first: an input joins the first bucket that contains its padded size and whose area it fills to at
    least ``min_fill``; otherwise it opens a bucket of its own padded size. A bucket whose members all have one
    size gets exactly that size (no padding at all), so equal-size inputs run exactly as without ``pad_batches``.
    Members keep their input order within a bucket.
    """
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i][0] * sizes[i][1], i))
    buckets: list[tuple[tuple[int, int], list[int]]] = []
    for i in order:
        ph, pw = padded_size(*sizes[i], multiple=multiple)
        for (bh, bw), members in buckets:
            if ph <= bh and pw <= bw and ph * pw >= min_fill * bh * bw:
                members.append(i)
                break
        else:
            buckets.append(((ph, pw), [i]))
    result = []
    for shape, members in buckets:
        members.sort()
        own = {tuple(sizes[i]) for i in members}
        result.append((next(iter(own)) if len(own) == 1 else shape, members))
    return result
