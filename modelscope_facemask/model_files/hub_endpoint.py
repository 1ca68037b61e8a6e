"""Which ModelScope hub endpoint this process talks to: the one ModelScope's own client would use.

``MODELSCOPE_ENDPOINT``, else the deprecated ``MODELSCOPE_DOMAIN`` (``https://`` prepended), else the client's
default (``modelscope_hub.constants.DEFAULT_ENDPOINT``, ``https://modelscope.cn`` in modelscope 1.40.2).
"""
from __future__ import annotations

import os

ENDPOINT_ENV = "MODELSCOPE_ENDPOINT"
DOMAIN_ENV = "MODELSCOPE_DOMAIN"  # deprecated by ModelScope, still honoured by its client
FALLBACK_ENDPOINT = "https://modelscope.cn"


def default_endpoint() -> str:
    """ModelScope's built-in endpoint (read from the installed client when it has the constant)."""
    try:
        from modelscope_hub.constants import DEFAULT_ENDPOINT  # modelscope >= 1.3x

        return str(DEFAULT_ENDPOINT)
    except ImportError:
        pass
    try:
        from modelscope.hub.constants import DEFAULT_MODELSCOPE_DOMAIN  # older modelscope: a bare domain

        return f"https://{DEFAULT_MODELSCOPE_DOMAIN}"
    except ImportError:
        return FALLBACK_ENDPOINT


def normalize_endpoint(endpoint: str) -> str:
    """A scheme guaranteed (``https://`` when absent) and no trailing slash, as ModelScope's client does."""
    endpoint = endpoint.strip()
    if not endpoint.lower().startswith(("http://", "https://")):
        endpoint = f"https://{endpoint}"
    return endpoint.rstrip("/")


def resolve_endpoint(endpoint: str | None = None) -> str:
    """``endpoint`` if given, else ``$MODELSCOPE_ENDPOINT``, else ``$MODELSCOPE_DOMAIN``, else the default."""
    chosen = endpoint or os.environ.get(ENDPOINT_ENV) or os.environ.get(DOMAIN_ENV, "").strip() or default_endpoint()
    return normalize_endpoint(chosen)
