"""Passwords out of URLs before anything is printed, logged or stored.

A storage URL such as ``postgresql+psycopg://user:secret@host/db`` reaches the terminal (the run
summary, error messages), the study's own attributes (its study file), W&B (config, debug log)
and log records. Every such place goes through ``redact_url`` (one URL) or ``redact_text`` (a
message that may hold URLs anywhere). The userinfo password becomes ``***``; so do the values of
query parameters that carry credentials (``?password=...``, libpq's ``sslpassword``, tokens).

A single URL whose userinfo SQLAlchemy parses unambiguously (one ``@``, in the authority) is
rendered by SQLAlchemy's ``URL.render_as_string(hide_password=True)`` (``redact_url``). Text that
may hold URLs anywhere, and URLs with more than one ``@``, go through the pattern here: SQLAlchemy
cuts the userinfo at the first ``@``, so a password holding an unescaped ``@`` would leak its
tail, where the pattern cuts at the last ``@`` before the host (a test checks both agree
elsewhere).

A password written without a scheme (``user:secret@host:5432``, a Ray address, or a path that
ends in one) is masked too: a user who left the scheme out must not see the password echoed in the
error that says so.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any

MASK = "***"

_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*):(?P<secret>\S*?)@(?=[^@\s'\"/]*(?:[/?#\s'\"]|$))"
)
"""``scheme://user:password@host``: the password runs to the last ``@`` before the host's end, and
may hold anything but whitespace: SQLAlchemy reads ``/``, quotes and ``:`` in it as the password's
(a generated or base64 password often has a ``/``), so a quote or slash must not end the mask.
Only web URLs keep RFC 3986's reading, where the authority ends at the first ``/``
(``http://host:8080/pkg@1.2`` is a port and a path)."""

_WEB_SCHEMES = ("http", "https", "ws", "wss", "ftp")


def _masked(match: re.Match[str]) -> str:
    scheme = match["head"].split("://", 1)[0].lower()
    if scheme in _WEB_SCHEMES and "/" in match["secret"]:
        return match[0]  # a port and a path, not a password
    return f"{match['head']}:{MASK}@"


_BARE_USERINFO = re.compile(
    r"(?<![^\s'\"(\[=,;/<])(?P<user>[^\s:/@'\"()\[\]=,;<>]*):(?P<secret>(?!//)\S+)@"
    r"(?=(?:\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9][A-Za-z0-9.\-_]*)(?:[:/?#\s'\"),;\]>]|$))"
)
"""``user:password@host`` with no scheme before it: it starts a word (or follows ``/``, ``=``, a
quote or a bracket) and its ``@`` is followed by a host name or a bracketed IPv6 address that
ends the word or is followed by a port, path or query. The password runs to the last such ``@``
in the word (``u:p@ss/word@host``: ``ss/word`` may be a path or the password's tail; masked). A ``scheme://`` is no user and password, and a match inside such a URL is left
to ``_USERINFO`` (``_bare_masked``)."""
_WORD_SEPARATOR = re.compile(r"[\s'\"]")


def _bare_masked(match: re.Match[str]) -> str:
    word_so_far = _WORD_SEPARATOR.split(match.string[: match.start()])[-1]
    if "://" in word_so_far:  # e.g. http://host:8080/pkg@1.2: a port and a path, decided above
        return match[0]
    return f"{match['user']}:{MASK}@"


_QUERY = re.compile(
    r"(?P<head>[?&;](?:[A-Za-z_]*(?:password|passwd|pwd|secret|token|api_key|apikey))=)(?P<secret>[^&#\s'\"]*)",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it (or ``user:password@host`` without a
    scheme) replaced by ``***``."""
    if "://" not in text and "=" not in text and "@" not in text:
        return text
    text = _USERINFO.sub(_masked, text)
    text = _BARE_USERINFO.sub(_bare_masked, text)
    return _QUERY.sub(lambda m: f"{m['head']}{MASK}" if m["secret"] else m[0], text)


def redact_url(url: str) -> str:
    """One URL (or a journal path, returned as it is) without its password.

    A URL SQLAlchemy parses unambiguously (one ``@``) is rendered by SQLAlchemy with its password
    hidden; any other string goes through the pattern (``redact_text``), which also masks
    credentials in the query either way."""
    authority = url.split("://", 1)[-1].split("/", 1)[0]
    if "://" not in url or url.count("@") != 1 or "@" not in authority:
        return redact_text(url)
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # not a URL SQLAlchemy knows: the pattern decides
        return redact_text(url)
    if parsed.password is None:
        return redact_text(url)
    return redact_text(parsed.render_as_string(hide_password=True))


def redact_tree(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings) with every string passed through ``redact_text``."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: redact_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(item) for item in value]
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts URLs in each record's final message (arguments included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a ``RedactingFilter`` to every handler of ``logger`` (the root logger by default), once."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


_ARGV_LOCK = threading.RLock()


@contextlib.contextmanager
def command_line_redacted() -> Iterator[None]:
    """``sys.argv`` without URL passwords while the block runs (W&B's run metadata keeps the
    command line). A lock serialises the swap: W&B runs start from the driver and from trials'
    background threads (``tracking.live``), which would otherwise restore each other's copy."""
    with _ARGV_LOCK:
        saved = sys.argv
        sys.argv = [redact_text(arg) for arg in saved]
        try:
            yield
        finally:
            sys.argv = saved
