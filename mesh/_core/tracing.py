"""OpenTelemetry spans for mesh calls, only in a process that configured OpenTelemetry.

Tracing is on when ``opentelemetry.trace`` is already imported *and* a tracer provider was set
with ``opentelemetry.trace.set_tracer_provider`` (the SDK's, or any real one; the API's no-op
and proxy providers do not count). Nothing here imports ``opentelemetry`` otherwise: a process
that never configured it loads none of it, and :func:`enabled` costs one dict lookup per call
(two attribute reads when the API is imported by a library but no provider was set).

What each side records (OpenTelemetry's RPC conventions):

* the caller, a ``CLIENT`` span ``Class/method`` around each call (a sync call: until the value
  is decoded; an async call: from the send until the reply arrives), whose context travels in
  the call's header as W3C ``traceparent`` / ``tracestate`` (header keys of the same names);
* the server, a ``SERVER`` span ``Class/method``, a child of the caller's, current while the
  method runs (a worker thread, or the coroutine's task), so that calls the method makes are
  its children: A -> B -> C is one trace.

An error reply sets the span's status to ``ERROR`` (with ``error.type``). A malformed trace
context from a peer is ignored (W3C: the server span then starts a new trace); tracing never
changes what a call does.

For the HTTP edge: :func:`incoming` makes the ``traceparent`` of an incoming request the parent
of the mesh calls made inside it.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from typing import Any, Callable

from mesh._core import wire

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "ClientSpan",
    "ServerSpan",
    "carrier",
    "client_span",
    "enabled",
    "end_server",
    "incoming",
    "server_span",
]

TRACEPARENT = "traceparent"  # header keys (wire.HEADER_KEYS, PROTOCOL.md): W3C Trace Context
TRACESTATE = "tracestate"
_PARENT_MAX = 128  # a W3C traceparent is 55 characters; anything much longer is not one
_STATE_MAX = 1024  # W3C: at most 32 members, 512 characters recommended
SYSTEM = "zmq-agent-mesh"  # rpc.system

_MISSING = object()
_state: tuple[Any, Any] = (None, None)  # (the provider last seen, its tracer or None when it does not count)


def enabled() -> bool:
    """Whether this process traces: OpenTelemetry imported and a real tracer provider set."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return False
    return _tracer(trace) is not None


def _tracer(trace: types.ModuleType) -> Any:
    """The mesh's tracer from the global provider, or None (no provider, or a no-op one)."""
    global _state
    provider: Any = getattr(trace, "_TRACER_PROVIDER", _MISSING)  # None until set_tracer_provider()
    if provider is None:
        return None
    if provider is _MISSING:  # an API version without the attribute: ask it (may read env vars)
        provider = trace.get_tracer_provider()
    seen, tracer = _state
    if provider is seen:
        return tracer
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        tracer = None
    else:
        tracer = provider.get_tracer("zmq-agent-mesh", schema_url="https://opentelemetry.io/schemas/1.26.0")
    _state = (provider, tracer)
    return tracer


def _otel() -> tuple[Any, Any, Any]:
    """(``opentelemetry.trace``, ``opentelemetry.context``, the W3C propagator): only when enabled."""
    global _MODULES
    if _MODULES is None:
        from opentelemetry import context as otel_context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        _MODULES = (trace, otel_context, TraceContextTextMapPropagator())
    return _MODULES


_MODULES: tuple[Any, Any, Any] | None = None  # imported on the first traced call, never before


def carrier(header: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """The trace context a request's header carries, as ``(traceparent, tracestate)``; None if absent."""
    parent = header.get(TRACEPARENT)
    if parent is None:
        return None
    state = header.get(TRACESTATE)
    return parent, state


def _extract(trace_context: Any) -> Any:
    """An OpenTelemetry context from a carrier (``(traceparent, tracestate)``) or a mapping of HTTP headers."""
    _, _, w3c = _otel()
    if trace_context is None:
        return None
    if isinstance(trace_context, tuple):
        parent, state = trace_context
        fields = {}
        if type(parent) is str and len(parent) <= _PARENT_MAX:
            fields[TRACEPARENT] = parent
            if type(state) is str and len(state) <= _STATE_MAX:
                fields[TRACESTATE] = state
    else:  # HTTP headers: any case
        fields = {str(k).lower(): v for k, v in trace_context.items() if str(k).lower() in (TRACEPARENT, TRACESTATE)}
        fields = {k: v for k, v in fields.items() if type(v) is str and len(v) <= _STATE_MAX}
    if TRACEPARENT not in fields:
        return None
    return w3c.extract(fields)  # an invalid traceparent gives an empty context: a new trace


def _attributes(cls_name: str, method: str, address: str | None = None) -> dict[str, Any]:
    attrs: dict[str, Any] = {"rpc.system": SYSTEM, "rpc.service": cls_name, "rpc.method": method}
    if address:
        host, _, port = address.removeprefix("tcp://").rpartition(":")
        attrs["server.address"] = host.strip("[]")
        if port.isdigit():
            attrs["server.port"] = int(port)
    return attrs


def _error_of(entry_header: Mapping[str, Any]) -> str | None:
    """``error.type`` of an ``err`` reply (the remote exception's type, else the error kind)."""
    if entry_header.get("op") != wire.ERR:
        return None
    return str(entry_header.get("type") or entry_header.get("kind") or "error")


def _set_error(span: Any, error_type: str, message: str) -> None:
    trace, _, _ = _otel()
    span.set_attribute("error.type", error_type)
    span.set_status(trace.Status(trace.StatusCode.ERROR, message))


# ----------------------------------------------------------------------------- caller side
class ClientSpan:
    """The caller's span of one call; the context it injected into the call's header."""

    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` (the sync call), ending the span with its outcome."""
        try:
            value = fn(*args)
        except BaseException as exc:
            self.fail(exc)
            raise
        self.span.end()
        return value

    def fail(self, exc: BaseException) -> None:
        """The call failed (raised here): status ``ERROR``, the exception recorded, the span ended."""
        self.span.record_exception(exc)
        _set_error(self.span, getattr(exc, "remote_type", None) or type(exc).__name__, str(exc))
        self.span.end()

    def end_on(self, fut: Future) -> None:
        """End the span when the reply of an async call arrives (status from the reply)."""
        fut.add_done_callback(self._done)

    def _done(self, fut: Future) -> None:
        try:
            exc = fut.exception()
            if exc is not None:
                _set_error(self.span, type(exc).__name__, str(exc))
            else:
                header = fut.result()[0]
                error = _error_of(header)
                if error is not None:
                    _set_error(self.span, error, str(header.get("msg", "")))
        except BaseException as exc:  # noqa: BLE001 - a cancelled future; tracing never raises here
            _set_error(self.span, type(exc).__name__, str(exc))
        finally:
            self.span.end()


def client_span(header: dict, cls_name: str, method: str, address: str) -> ClientSpan:
    """Start the caller's span of a call (a child of the current context) and put its context
    in ``header`` (``traceparent``, ``tracestate``). Only when :func:`enabled`."""
    trace, _, _ = _otel()
    span = _tracer(trace).start_span(f"{cls_name}/{method}", kind=trace.SpanKind.CLIENT,
                                     attributes=_attributes(cls_name, method, address))
    ctx = span.get_span_context()
    if ctx.is_valid:  # what the W3C propagator's inject() writes, without its context round trip
        header[TRACEPARENT] = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
        if ctx.trace_state:
            header[TRACESTATE] = ctx.trace_state.to_header()
    return ClientSpan(span)


# ----------------------------------------------------------------------------- server side
class ServerSpan:
    """The server's span of one call, current while the method runs."""

    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    def bind(self, fn: Callable[..., Any], on_loop: bool) -> Callable[..., Any]:
        """``fn`` run with this span current: on the calling thread, or inside the coroutine's task."""
        trace, otel_context, _ = _otel()
        ctx = trace.set_span_in_context(self.span)
        span = self.span

        if on_loop:
            async def traced_coroutine(*args: Any, **kwargs: Any) -> Any:
                token = otel_context.attach(ctx)
                try:
                    value = fn(*args, **kwargs)
                    if type(value) is types.CoroutineType:
                        value = await value
                    return value
                except BaseException as exc:
                    span.record_exception(exc)
                    raise
                finally:
                    otel_context.detach(token)

            return traced_coroutine

        def traced(*args: Any, **kwargs: Any) -> Any:
            token = otel_context.attach(ctx)
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                span.record_exception(exc)
                raise
            finally:
                otel_context.detach(token)

        return traced

    def end(self, entry_header: Mapping[str, Any]) -> None:
        """The call's reply is made: status from it, then the span ends."""
        error = _error_of(entry_header)
        if error is not None:
            _set_error(self.span, error, str(entry_header.get("msg", "")))
        self.span.end()


def server_span(trace_context: Any, cls_name: str, method: str) -> ServerSpan:
    """Start the server's span of a call, a child of the caller's context (``carrier(header)``).
    Only when :func:`enabled`."""
    trace, _, _ = _otel()
    tracer = _tracer(trace)
    parent = _extract(trace_context)
    span = tracer.start_span(f"{cls_name}/{method}", context=parent, kind=trace.SpanKind.SERVER,
                             attributes=_attributes(cls_name, method))
    return ServerSpan(span)


def end_server(trace_slot: Any, entry_header: Mapping[str, Any]) -> None:
    """End the server span kept in a call's ``trace`` slot, if one was started (else nothing)."""
    if type(trace_slot) is ServerSpan:
        trace_slot.end(entry_header)


# ----------------------------------------------------------------------------- the HTTP edge
@contextlib.contextmanager
def incoming(headers: Mapping[str, Any], name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """Run a request that came from outside the mesh (the HTTP edge) under its W3C trace context.

    With tracing on: a ``SERVER`` span ``name``, a child of the request's ``traceparent`` (any
    header case; none or an invalid one starts a new trace), is current inside the block, so
    the mesh calls made there are its children; an exception sets its status and propagates.
    With tracing off: nothing (no import), the block runs as it is. Yields the span or None.

    Example (an ASGI handler)::

        with tracing.incoming(request.headers, "a2a message/send", {"mesh.agent": name}):
            reply = agent.reply(msg)    # or: await agent.reply(msg)
    """
    if not enabled():
        yield None
        return
    trace, otel_context, _ = _otel()
    span = _tracer(trace).start_span(name, context=_extract(headers), kind=trace.SpanKind.SERVER,
                                     attributes=dict(attributes or {}))
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    except BaseException as exc:
        span.record_exception(exc)
        _set_error(span, type(exc).__name__, str(exc))
        raise
    finally:
        otel_context.detach(token)
        span.end()
