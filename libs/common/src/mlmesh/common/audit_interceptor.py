"""The server interceptor that feeds the audit log: one entry per audited RPC (`audit_methods`).

It is the innermost interceptor: it needs the identity that auth sets, and it sees a domain error
before the error mapping turns it into a status. So only authenticated calls are recorded; a call
without a valid token never reaches it (it is counted by the metrics and logged). The entry names
who, method, object ids and outcome, never the token or the payload, and costs one queue put.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from google.protobuf.message import Message
from opentelemetry import trace

from mlmesh.common import auth
from mlmesh.common.audit import RPC
from mlmesh.common.audit_log import AuditLog
from mlmesh.common.audit_methods import is_audited, object_ids
from mlmesh.common.errors import MlmeshError
from mlmesh.common.grpc_interceptors import AUTH_EXEMPT_PREFIXES, _AbortError, _call, _code_name, _iterate, wrap_handler

log = logging.getLogger("mlmesh.audit")


def _outcome(exc: BaseException, context) -> str:
    if isinstance(exc, MlmeshError):
        return exc.grpc_code.name
    if isinstance(exc, _AbortError):
        return _code_name(context)
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.INTERNAL.name


class _FirstMessage:
    """The request, or for a client stream the first message it yields (where the ids are)."""

    def __init__(self, request):
        self.message = request if isinstance(request, Message) else None
        self.request = request if self.message is not None or not hasattr(request, "__aiter__") else self._tap(request)

    async def _tap(self, iterator):
        async for item in iterator:
            if self.message is None:
                self.message = item
            yield item


class AuditInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, audit: AuditLog):
        self._audit = audit
        self._decided: dict[str, bool] = {}  # per served method only: bounded

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return None
        audited = self._decided.get(method)
        if audited is None:
            audited = self._decided[method] = is_audited(method) and not method.startswith(AUTH_EXEMPT_PREFIXES)
        return wrap_handler(handler, method, self._unary, self._stream) if audited else handler

    def _unary(self, fn, method):
        async def run(request, context):
            first, response, outcome = _FirstMessage(request), None, "OK"
            try:
                response = await _call(fn, first.request, context)
                outcome = _code_name(context)
                return response
            except BaseException as exc:
                outcome = _outcome(exc, context)
                raise
            finally:
                self._record(method, first.message, response, outcome)

        return run

    def _stream(self, fn, method):
        async def run(request, context):
            first, outcome = _FirstMessage(request), "OK"
            try:
                async for item in _iterate(fn, first.request, context):
                    yield item
                outcome = _code_name(context)
            except BaseException as exc:
                outcome = _outcome(exc, context)
                raise
            finally:
                self._record(method, first.message, None, outcome)

        return run

    def _record(self, method: str, request, response, outcome: str) -> None:
        ident = auth._current_identity.get()
        if ident is None:
            return
        try:
            span = trace.get_current_span().get_span_context()
            # Time and trace id go as numbers: the publisher formats them, off the RPC path.
            self._audit.record(
                {
                    "kind": RPC,
                    "time": time.time(),
                    "subject": ident.subject,
                    "team": ident.team,
                    "roles": sorted(ident.roles),
                    "method": method,
                    "object": object_ids(request, response if outcome == "OK" else None),
                    "outcome": outcome,
                    "trace_id": span.trace_id if span.is_valid else 0,
                }
            )
        except Exception:  # the RPC has its answer; a lost entry is counted, not raised
            log.exception("audit entry not built", extra={"method": method})
            self._audit.count_lost()
