"""Domain errors shared by every service.

Services raise these; one gRPC interceptor (`mlmesh.common.grpc_errors`) and one set of FastAPI
handlers (`mlmesh.common.http`) turn them into status codes, so no servicer builds a status itself.
Anything that is not an `MlmeshError` becomes INTERNAL with a generic message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class MlmeshError(Exception):
    """Base of all domain errors. `message` is safe to show to the caller."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    http_status: int = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(MlmeshError):
    """Bad input; names every offending field (google.rpc.BadRequest)."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400

    def __init__(self, message: str, violations: Mapping[str, str] | list[FieldViolation] | None = None):
        super().__init__(message)
        if isinstance(violations, Mapping):
            violations = [FieldViolation(f, d) for f, d in violations.items()]
        self.violations: list[FieldViolation] = list(violations or [])

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls(f"invalid {field}: {description}", [FieldViolation(field, description)])


class NotFound(MlmeshError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404


class AlreadyExists(MlmeshError):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    http_status = 409


class Conflict(MlmeshError):
    """A concurrent writer won (compare-and-set on a revision failed); the caller may re-read and retry."""

    grpc_code = grpc.StatusCode.ABORTED
    http_status = 409


class FailedPrecondition(MlmeshError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 412


class QuotaExceeded(MlmeshError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429


class TooLarge(MlmeshError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 413


class Unauthenticated(MlmeshError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401


class PermissionDenied(MlmeshError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403


class Unavailable(MlmeshError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class DeadlineExceeded(MlmeshError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504


class DataLoss(MlmeshError):
    """Stored bytes failed verification (checksum mismatch, truncation, missing blob): unrecoverable
    corruption of committed data. Raised loudly, never retried, never served."""

    grpc_code = grpc.StatusCode.DATA_LOSS
    http_status = 500


INTERNAL_MESSAGE = "internal error"
