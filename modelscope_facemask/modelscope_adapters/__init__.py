"""ModelScope adapters: thin registered classes over the pure-PyTorch networks and face operations."""
