"""Keep the hub access token out of everything a command prints.

A hub (or a proxy) that echoes request headers puts the token into error messages: ``Authorization: Bearer <token>``,
``Cookie: m_session_id=<token>``. :func:`scrub_token` masks every occurrence (raw and URL-encoded; a form shorter than
:data:`SHORT_FORM` characters only where it stands alone, so that a test token like ``abc`` does not mask every word
containing it); while
:func:`scrubbed_output` is active, ``sys.stdout``, ``sys.stderr``
and every log record (whichever handler writes it) mask it too, whoever writes (our messages, ModelScope's logs,
warnings, tracebacks under ``-v``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from typing import Any, Iterator
from urllib.parse import quote, quote_plus

TOKEN_ENV = "MODELSCOPE_API_TOKEN"
MASK = "***"
#: forms shorter than this are masked only where no token character touches them (real tokens are 30+ characters)
SHORT_FORM = 8
_TOKEN_CHARS = r"A-Za-z0-9_.~%-"


def token_forms(token: str) -> list[str]:
    """The spellings of ``token`` that can appear in text: raw, percent-encoded, form-encoded (longest first)."""
    forms = {token, quote(token, safe=""), quote_plus(token, safe="")}
    return sorted((f for f in forms if f), key=len, reverse=True)


def current_token() -> str:
    """The token from ``MODELSCOPE_API_TOKEN`` ('' when unset)."""
    return os.environ.get(TOKEN_ENV, "").strip()


def scrub_token(text: str, token: str | None = None) -> str:
    """``text`` with every form of ``token`` (default: the environment's) replaced by ``***``."""
    token = current_token() if token is None else token.strip()
    if not token:
        return text
    for form in token_forms(token):
        if len(form) >= SHORT_FORM:
            text = text.replace(form, MASK)
        else:
            text = re.sub(rf"(?<![{_TOKEN_CHARS}]){re.escape(form)}(?![{_TOKEN_CHARS}])", MASK, text)
    return text


class ScrubbingStream:
    """A text stream that masks the token in everything written through it; everything else is delegated."""

    def __init__(self, stream: Any, token: str) -> None:
        self._stream = stream
        self._token = token

    def write(self, text: str) -> int:
        self._stream.write(scrub_token(text, self._token))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _scrubbing_record_factory(factory: Any, token: str) -> Any:
    """A log record factory that masks ``token`` in the message, the exception text and the stack of every record."""

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed log call: keep its format string
            message = str(record.msg)
        record.msg, record.args = scrub_token(message, token), ()
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrub_token(logging.Formatter().formatException(record.exc_info), token)
            record.exc_info = None
        if record.stack_info:
            record.stack_info = scrub_token(record.stack_info, token)
        return record

    return make


@contextlib.contextmanager
def scrubbed_output(token: str | None = None) -> Iterator[None]:
    """Mask ``token`` (default: the environment's) while active: in everything written to sys.stdout and
    sys.stderr, and in every log record (whichever handler and stream it goes to)."""
    token = current_token() if token is None else token.strip()
    if not token:
        yield
        return
    saved_out, saved_err = sys.stdout, sys.stderr
    saved_factory = logging.getLogRecordFactory()
    logging.setLogRecordFactory(_scrubbing_record_factory(saved_factory, token))
    sys.stdout, sys.stderr = ScrubbingStream(saved_out, token), ScrubbingStream(saved_err, token)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved_out, saved_err
        logging.setLogRecordFactory(saved_factory)
