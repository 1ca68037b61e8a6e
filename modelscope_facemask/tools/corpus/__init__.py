"""Embedding a corpus of photos: resumable face-rows folders (``face_rows``, ``rows_lock``), ordered decode-ahead
runs over many images (``embedding_runs``) and the Ray Data path past one machine (``ray_embed``)."""
