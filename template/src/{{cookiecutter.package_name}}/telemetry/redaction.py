"""Credentials kept out of the JSON log lines and span attributes, as Logfire's scrubbing does."""

from __future__ import annotations

import re

from .tenant import TENANT_ATTRIBUTES

# Extras named like credentials are redacted, on stdout as in spans.
_CREDENTIAL_WORDS = (
    r"password|passwd|secret|auth(?!ors?\b)|credential|private[._ -]?key|api[._ -]?key|"
    r"session|cookie|token|jwt|csrf|xsrf|ssn|credit[._ -]?card"
)
_SECRET_KEY = re.compile(_CREDENTIAL_WORDS, re.IGNORECASE)
# The same words, matched in lower-cased ASCII text: a case-insensitive search of a short path
# took about 1 us, lower-casing it first and searching case-sensitively 0.2 us. Only for ASCII,
# where the two agree exactly (IGNORECASE also folds a few non-ASCII letters, such as the
# Kelvin sign, onto ASCII ones).
_SECRET_LOWER = re.compile(_CREDENTIAL_WORDS)
REDACTED = "[redacted]"
_secret_keys: dict[str, bool] = {}


def is_secret_key(key: str) -> bool:
    """Whether an extra's name looks like a credential (cached: services log few distinct keys)."""
    secret = _secret_keys.get(key)
    if secret is None:
        secret = _secret_keys[key] = (
            key not in TENANT_ATTRIBUTES and _SECRET_KEY.search(key) is not None
        )
    return secret


def redact_text(value: str) -> str:
    """`value`, or REDACTED if it mentions a credential (as Logfire scrubs span attribute values).

    A value that is nothing but the word (`"password"`) is kept, as Logfire keeps it.
    """
    match = _SECRET_LOWER.search(value.lower()) if value.isascii() else _SECRET_KEY.search(value)
    if match is None or match.span() == (0, len(value)):
        return value
    return REDACTED
