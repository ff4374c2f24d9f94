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


def as_status(code: object) -> Status:
    """The Status a handler means by `ctx.status = code`: a member as it is, another int as its
    class (404 -> BAD_REQUEST); anything that is not an int is a TypeError."""
    if type(code) is Status:
        return code
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError(
            f"ctx.status must be an int status code such as wh.Status.BAD_REQUEST, "
            f"got {type(code).__name__} {code!r}"
        )
    try:
        return Status(code)
    except ValueError:
        if code >= 500:
            return Status.INTERNAL_ERROR
        return Status.BAD_REQUEST if code >= 400 else Status.SUCCESS
