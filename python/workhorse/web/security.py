"""The dashboard's guards: who may look (credentials), who may act (CSRF), where it may listen.

Rules, in the order a request meets them (Dashboard.__call__):
- With credentials set, every request (the page, its files, the API) needs them: HTTP Basic
  `USER:PASSWORD`, or a token (no colon) as `Authorization: Bearer TOKEN` or as the Basic
  password of any user name. Compared with hmac.compare_digest.
- Without credentials the dashboard is on loopback (serve_dashboard refuses anything else) and
  answers only requests whose Host is a loopback name, so a page whose DNS name was rebound to
  127.0.0.1 cannot read it or its CSRF token.
- A state-changing request is a POST or DELETE (GET never changes anything). It is refused when
  the browser says it comes from another site (Sec-Fetch-Site other than same-origin or none) or
  from another origin (an Origin header that is not this server's), and otherwise needs the
  page's CSRF token in X-CSRF-Token or `Sec-Fetch-Site: same-origin`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import socket
from email.message import Message
from urllib.parse import urlsplit

__all__ = [
    "SECURITY_HEADERS",
    "Credentials",
    "cross_site_reason",
    "csrf_ok",
    "is_loopback",
    "is_loopback_host_header",
]

# Sent with every answer of the dashboard: no inline script or style, nothing from elsewhere,
# never framed (clickjacking), no sniffing a JSON answer into a script, no Referer with job ids.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)


class Credentials:
    """What `auth` asks for: "USER:PASSWORD" (HTTP Basic), or a token (no colon)."""

    def __init__(self, auth: str) -> None:
        if not isinstance(auth, str):
            raise TypeError(f"auth must be a str (USER:PASSWORD or a token), got {auth!r}")
        user, colon, password = auth.partition(":")
        if colon and (not user or not password):
            raise ValueError("auth must be USER:PASSWORD with both parts non-empty, or a token")
        if not auth.strip():
            raise ValueError("auth must not be empty")
        self._user = user.encode() if colon else None
        self._secret = (password if colon else auth).encode()

    def __repr__(self) -> str:
        return "Credentials(USER:***)" if self._user is not None else "Credentials(token ***)"

    def check(self, authorization: str | None) -> bool:
        """True if an Authorization header carries these credentials."""
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer":
            return self._user is None and hmac.compare_digest(value.encode(), self._secret)
        if scheme != "basic":
            return False
        try:
            decoded = base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            return False
        user, colon, password = decoded.partition(b":")
        if not colon:
            return False
        password_ok = hmac.compare_digest(password, self._secret)
        if self._user is None:
            return password_ok  # a token: any user name
        user_ok = hmac.compare_digest(user, self._user)
        return user_ok & password_ok  # both compared, whichever is wrong


def is_loopback(host: str) -> bool:
    """True if every address `host` names is a loopback one (127.0.0.0/8, ::1, localhost)."""
    name = host.strip("[]")
    if name.lower() == "localhost" or name.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]).is_loopback for info in infos
    )


def _host_name(host_header: str) -> str:
    """The name in a Host header, without its port: "[::1]:5040" -> "::1"."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


def is_loopback_host_header(host_header: str | None) -> bool:
    """True for a Host header naming this machine by a loopback name or address (no lookup:
    a DNS name rebound to 127.0.0.1 is exactly what this refuses)."""
    if not host_header:
        return False
    name = _host_name(host_header.strip()).lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def cross_site_reason(headers: Message) -> str | None:
    """Why a state-changing request is cross-site (refused whatever token it has), or None."""
    fetch_site = headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {fetch_site.strip()})"
    origin = headers.get("Origin")
    if origin is not None:
        host = headers.get("Host", "")
        parts = urlsplit(origin.strip())
        if origin.strip() == "null" or parts.scheme not in ("http", "https"):
            return f"cross-origin request refused (Origin: {origin.strip()})"
        if parts.netloc.lower() != host.strip().lower():
            return f"cross-origin request refused (Origin {origin.strip()} is not {host})"
    return None


def csrf_ok(headers: Message, token: str) -> bool:
    """True if a state-changing request proves it comes from the dashboard's own page."""
    fetch_site = headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.strip().lower() == "same-origin":
        return True
    sent = headers.get("X-CSRF-Token")
    return sent is not None and hmac.compare_digest(sent.strip().encode(), token.encode())
