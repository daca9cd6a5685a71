"""One exception family for the service; the HTTP status is data on each class."""
from __future__ import annotations


class DicomWebError(Exception):
    status = 500
    title = "Internal Server Error"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(DicomWebError):
    status, title = 400, "Bad Request"


class Unauthorized(DicomWebError):
    status, title = 401, "Unauthorized"


class Forbidden(DicomWebError):
    status, title = 403, "Forbidden"


class NotFound(DicomWebError):
    status, title = 404, "Not Found"


class NotAcceptable(DicomWebError):
    status, title = 406, "Not Acceptable"


class Conflict(DicomWebError):
    status, title = 409, "Conflict"


class PayloadTooLarge(DicomWebError):
    status, title = 413, "Payload Too Large"


class RangeNotSatisfiable(DicomWebError):
    status, title = 416, "Range Not Satisfiable"


class UpgradeRequired(DicomWebError):
    status, title = 426, "Upgrade Required"


class UnsupportedMediaType(DicomWebError):
    status, title = 415, "Unsupported Media Type"


class ServiceUnavailable(DicomWebError):
    status, title = 503, "Service Unavailable"
