"""Tools built on the pipeline: hub packing and publishing (``hub``), reference-embedding regression (``regress``),
1:N galleries (``gallery``), corpus embedding (``corpus``), evaluation and synthetic masks, annotated pictures, the
offline demo. Tools may use each other only without cycles (the import contract checks it)."""
