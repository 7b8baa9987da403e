"""Credentials inside teacher URLs (``https://user:key@host``, ``?api_key=...``): hidden wherever a
URL is shown, and left out of the identity that names a teacher's cache, so rotating a key keeps
the paid clips and no secret ends up in a directory name. Stdlib only (the CLI imports it)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameter names (lower case, '-' and '_' removed) that carry a secret, exactly or as the
# ending. Narrow on purpose: the identity drops these, and dropping an ordinary parameter
# (``keyframes=8``) would merge the caches of two different teachers.
_SECRET_NAMES = frozenset({"key", "apikey", "token", "accesstoken", "authtoken", "auth", "password", "pass",
                           "secret", "clientsecret", "sig", "signature", "credential", "credentials"})
_SECRET_ENDINGS = ("apikey", "token", "secret", "signature", "password", "credential")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def is_secret_param(name: str) -> bool:
    """Whether a query parameter name carries a credential (``api_key``, ``token``, ``X-Amz-Signature``...)."""
    n = name.lower().replace("-", "").replace("_", "")
    return n in _SECRET_NAMES or n.endswith(_SECRET_ENDINGS)


def _rebuild(url: str, mask: bool) -> str:
    """``url`` with its secrets replaced by ``MASK`` (``mask``) or removed; unchanged if it has none."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL that can be taken apart: show nothing of it that could be secret
        return MASK if "@" in url or "?" in url else url
    netloc, query, changed = parts.netloc, parts.query, False
    if "@" in netloc:
        host = netloc.rpartition("@")[2]
        netloc, changed = (f"{MASK}@{host}" if mask else host), True
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_param(k) for k, _ in pairs):
            pairs = ([(k, MASK if is_secret_param(k) else v) for k, v in pairs] if mask
                     else [(k, v) for k, v in pairs if not is_secret_param(k)])
            query, changed = urlencode(pairs, safe="*"), True
    if not changed:
        return url  # exactly as given: the identity of caches made before credentials were handled
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_url(url: str) -> str:
    """``url`` for showing: its user info and secret query values replaced by ``***``."""
    return _rebuild(url, mask=True)


def credential_free_url(url: str) -> str:
    """``url`` without its user info and secret query parameters: what names a teacher (its
    cache identity). A URL without credentials is returned unchanged."""
    return _rebuild(url, mask=False)


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (for error messages that quote a URL)."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
