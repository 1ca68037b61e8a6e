"""The synthetic gallery of ``gallery_scale.py``: seeded face-like embeddings (identity centres, images at cosine ~ rho
to each other) and the cosines they actually have."""
from __future__ import annotations

from typing import Any

import numpy as np

CHUNK = 20_000  # identities generated per step (bounded temporaries)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` divided by their L2 norms (float32)."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32, copy=False)


def face_like_images(centres: np.ndarray, which: np.ndarray, rho: float, rng: np.random.Generator) -> np.ndarray:
    """One fresh image embedding per entry of ``which`` (identity numbers), cosine ~ rho to each other same-id image."""
    noise = unit_rows(rng.standard_normal((len(which), centres.shape[1]), dtype=np.float32))
    return unit_rows(np.float32(np.sqrt(rho)) * centres[which] + np.float32(np.sqrt(1.0 - rho)) * noise)


def synthetic_gallery(identities: int, per_identity: int, dim: int, rho: float, probes: int, seed: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(gallery float32 (identities*per_identity, dim), its identity per row, probes, probe identities)."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((identities, dim), dtype=np.float32))
    gallery = np.empty((identities * per_identity, dim), np.float32)
    for start in range(0, identities, CHUNK):
        stop = min(identities, start + CHUNK)
        which = np.repeat(np.arange(start, stop), per_identity)
        gallery[start * per_identity:stop * per_identity] = face_like_images(centres, which, rho, rng)
    probe_ids = rng.integers(0, identities, probes)
    return gallery, np.repeat(np.arange(identities), per_identity), face_like_images(centres, probe_ids, rho, rng), \
        probe_ids


def cosine_statistics(gallery: np.ndarray, per_identity: int, probes: np.ndarray, probe_ids: np.ndarray,
                      seed: int) -> dict[str, Any]:
    """Measured cosines: same-identity image pairs, different-identity pairs, probe vs its own enrolled images."""
    rng = np.random.default_rng(seed + 1)
    n_id = len(gallery) // per_identity
    ident = rng.integers(0, n_id, 5000)
    a = gallery[ident * per_identity]
    same = np.einsum("ij,ij->i", a, gallery[ident * per_identity + 1])
    other = rng.integers(0, len(gallery), 5000)
    diff_mask = other // per_identity != ident
    diff = np.einsum("ij,ij->i", a, gallery[other])[diff_mask]
    own = np.einsum("ij,ij->i", probes, gallery[probe_ids * per_identity])

    def summary(v: np.ndarray) -> dict[str, float]:
        return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max()),
                "pairs": int(len(v))}
    return {"same_identity": summary(same), "different_identity": summary(diff), "probe_vs_own_image": summary(own)}
