"""Recognising credentials, so they stay out of workflow files, handles and logs.

Credentials belong in the executor's ``headers`` in ork.yaml, whose values come from
environment variables and are only ever held in memory. Anything a task writes is stored
with its run (the workflow snapshot, the deferred handle), so a task may not carry them.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_EXACT = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "apikey", "key"})
_WORDS = ("token", "secret", "password", "passwd", "auth", "api-key", "api_key", "apikey", "signature", "credential", "session")
MASK = "***"


def is_sensitive(name: str) -> bool:
    """True for a header or query parameter name that usually carries a credential."""
    lowered = name.strip().lower()
    return lowered in _EXACT or any(word in lowered for word in _WORDS)


def without_userinfo(url: str) -> str:
    """The URL without ``user:password@``: what a deferred handle stores."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def redact_url(url: str) -> str:
    """The URL with credential-like query values and any userinfo password masked, for logs and messages."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_sensitive(k) for k, _ in pairs):
            query = urlencode([(k, MASK if is_sensitive(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
