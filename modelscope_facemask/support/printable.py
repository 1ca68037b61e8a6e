"""Names and paths shown as text cannot forge output: control and other invisible characters are escaped.

An identity named ``"alice\\nbob: 1 image(s)"`` would otherwise print as two lines, an ESC sequence could recolour
or erase the terminal, ``\\r`` overwrite the line, and U+202E reverse what follows. :func:`printable` writes each
such character as a visible escape (``\\n``, ``\\x1b``, ``\\u202e``); JSON output needs none of this (it escapes
itself). :func:`check_identity_name` refuses the characters that have no place in a person's name when a new
identity is enrolled, so that galleries only ever hold them when they were written by older versions.
"""
from __future__ import annotations

import unicodedata
from typing import Iterable

from ..errors import EnrolmentSourceError

#: Unicode categories escaped on output: controls, format characters (bidi controls, zero-width characters),
#: surrogates, private use, unassigned, line and paragraph separators
ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
#: bidirectional formatting characters (embeddings, overrides, isolates, marks): the "Trojan Source" set
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: categories refused in new identity names: controls, separators that break lines, lone surrogates
REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(value: object) -> str:
    """``str(value)`` with every control, format, separator, private-use or unassigned character escaped
    (``\\n``, ``\\r``, ``\\t``, ``\\xNN``, ``\\uNNNN``, ``\\UNNNNNNNN``); printable text, spaces included, unchanged."""
    text = str(value)
    if text.isprintable():  # fast path; isprintable() is also False for spaces other than ' ', kept below
        return text
    return "".join(_escape(c) if unicodedata.category(c) in ESCAPED_CATEGORIES else c for c in text)


def unsafe_characters(name: str) -> list[str]:
    """The characters of ``name`` refused in an identity name (controls such as newline, tab and ESC, line and
    paragraph separators, lone surrogates, bidi controls), in order of appearance, each once."""
    found = [c for c in name if c in BIDI_CONTROLS or unicodedata.category(c) in REFUSED_CATEGORIES]
    return list(dict.fromkeys(found))


def check_identity_names(identities: Iterable[tuple[str, str]]) -> None:
    """Raise :class:`EnrolmentSourceError` for the first (identity, source) pair whose identity holds a character
    that :func:`unsafe_characters` refuses, naming the identity (escaped) and the image it labels."""
    for name, where in identities:
        check_identity_name(name, where)


def check_identity_name(name: str, where: str) -> None:
    """Raise :class:`EnrolmentSourceError` naming ``where`` (the image it labels) when the identity ``name`` holds a
    character that :func:`unsafe_characters` refuses."""
    bad = unsafe_characters(name)
    if bad:
        raise EnrolmentSourceError(
            f"identity '{printable(name)}' of {printable(where)} holds the control character(s) "
            f"{' '.join(_escape(c) for c in bad)}: a name is printed as text and may not contain line breaks, "
            "tabs, escape sequences or bidi controls; rename the identity folder or fix the CSV's identity column")
