"""Errors of the Toxiproxy API, each carrying the message and HTTP status the real server uses."""

from __future__ import annotations


class ApiError(Exception):
    """An error the HTTP API renders as `{"error": message, "status": status}` with that status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def to_json(self) -> dict[str, object]:
        return {"error": self.message, "status": self.status}


class BadRequestBody(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"bad request body: {detail}", 400)


class MissingField(ApiError):
    def __init__(self, field: str) -> None:
        super().__init__(f"missing required field: {field}", 400)


class ProxyNotFound(ApiError):
    def __init__(self) -> None:
        super().__init__("proxy not found", 404)


class ProxyAlreadyExists(ApiError):
    def __init__(self) -> None:
        super().__init__("proxy already exists", 409)


class InvalidStream(ApiError):
    def __init__(self) -> None:
        super().__init__("stream was invalid, can be either upstream or downstream", 400)


class InvalidToxicType(ApiError):
    def __init__(self) -> None:
        super().__init__("invalid toxic type", 400)


class ToxicAlreadyExists(ApiError):
    def __init__(self) -> None:
        super().__init__("toxic already exists", 409)


class ToxicNotFound(ApiError):
    def __init__(self) -> None:
        super().__init__("toxic not found", 404)


class ListenError(ApiError):
    """Binding a proxy's listener failed; the real server answers these with 500."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 500)
