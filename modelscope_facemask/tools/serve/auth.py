"""Optional API keys: ``--api-key-file F``, one key a line, ``KEY`` (read and write), ``KEY read`` or
``KEY write``; blank lines and ``#`` comments are ignored. A client sends ``Authorization: Bearer KEY`` or
``X-API-Key: KEY``. Keys are compared in constant time (``hmac.compare_digest`` of their SHA-256, against every
key), never logged nor echoed. Without a key or with a wrong one: 401; a read key on a route that changes the
gallery: 403. Open without a key: ``/healthz``, ``/readyz``, ``/health`` (ModelScope's liveness) and the web
console's static files (``/`` and ``/console/...``: the page holds no data, its calls send the key)."""
from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigurationError
from .api_errors import ApiError

READ, WRITE = "read", "write"
#: paths answered without a key
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/health", "/", "/favicon.ico"})
OPEN_PREFIXES = ("/console/",)


@dataclass(frozen=True)
class ApiKeys:
    """The SHA-256 of each key with its scope."""

    digests: tuple[tuple[bytes, str], ...]

    @classmethod
    def read(cls, path: str | os.PathLike) -> "ApiKeys":
        """Keys from ``path`` (format above); :class:`ConfigurationError` naming the line otherwise."""
        try:
            text = open(path, encoding="utf-8").read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"--api-key-file {str(path)!r} cannot be read ({type(exc).__name__}); give a "
                                     "text file with one key a line") from None
        digests = []
        for number, line in enumerate(text.splitlines(), start=1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            scope = words[1].lower() if len(words) > 1 else WRITE
            if len(words) > 2 or scope not in (READ, WRITE):
                raise ConfigurationError(f"--api-key-file {str(path)!r} line {number}: expected `KEY`, `KEY read` "
                                         "or `KEY write`")
            digests.append((hashlib.sha256(words[0].encode()).digest(), scope))
        if not digests:
            raise ConfigurationError(f"--api-key-file {str(path)!r} holds no key; add one key a line")
        return cls(tuple(digests))

    def scope_of(self, key: str | None) -> str | None:
        """The scope of ``key`` (None: no such key); looks at every key, whatever matches first."""
        if not key:
            return None
        given = hashlib.sha256(key.encode()).digest()
        found = None
        for digest, scope in self.digests:
            if hmac.compare_digest(given, digest) and found != WRITE:
                found = scope
        return found


def request_key(headers: Any) -> str | None:
    """The key a request sends: ``Authorization: Bearer K`` or ``X-API-Key: K``."""
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return headers.get("x-api-key") or None


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def check_access(keys: ApiKeys | None, headers: Any, path: str, needs: str) -> None:
    """Raise :class:`ApiError` 401/403 unless the request may call ``path`` (``needs``: read or write)."""
    if keys is None or is_open(path):
        return
    scope = keys.scope_of(request_key(headers))
    if scope is None:
        raise ApiError(401, "unauthorized", "this server needs an API key: send `Authorization: Bearer KEY` or "
                                            "`X-API-Key: KEY` (a missing or unknown key)",
                       {"WWW-Authenticate": "Bearer"})
    if needs == WRITE and scope != WRITE:
        raise ApiError(403, "forbidden", f"{path} changes the gallery and needs a write key; this key may only read")
