"""What a model folder holds and where it comes from: weights files (``checkpoints``), ``manifest.json``, hub ids
and snapshot folders (``model_folders``, ``hub_endpoint``, ``huggingface_download``), the real detector weights and
portraits fetched from the package registry (``assets``), and the ONNX detector conversion (``onnx_convert``).
Nothing here runs a network."""
