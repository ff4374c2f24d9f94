"""Execution status codes, modelled on HTTP (go-work's Status)."""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """Final status of one execution; rules in DESIGN.md section 2."""

    UNKNOWN = -1
    SUCCESS = 200
    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    TIMEOUT = 408
    NO_RESPONSE = 444
    INTERNAL_ERROR = 500
    UNAVAILABLE = 503

    @property
    def is_error(self) -> bool:
        """True for 4xx and 5xx codes."""
        return self >= 400
