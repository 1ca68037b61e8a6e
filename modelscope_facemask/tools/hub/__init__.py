"""Repositories and hubs: packing, publishing, manifests, model cards, repository writers, hub probing and
model-folder resolution."""
