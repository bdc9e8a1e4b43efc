"""What the gateway does to each chunk of a streamed answer on its way to the client.

Metered and cut into whole events (:class:`SseMeter`), the upstream's name of the model
replaced by the client's, every form of the model's own credential removed, and upstream
error events replaced by the gateway's own. Everything that is the same for the whole stream
(the names, the key, its forms) is computed once, when the stream starts, not per event.
"""

from __future__ import annotations

from garrison.domain import Model, UpstreamApi
from garrison.gateway.credential_echo import EchoForms, echo_forms, model_key, scrub_event
from garrison.gateway.metering import SseMeter, Usage
from garrison.gateway.upstream_call import client_model_bytes
from garrison.gateway.upstream_errors import rewrite_stream_errors


class StreamRelay:
    """Feed the upstream's bytes, get back the bytes to send to the client (``b""`` while an
    event is incomplete)."""

    __slots__ = ("_api", "_echo", "_key", "_model_name", "_new", "_old", "_upstream_model", "meter")

    def __init__(self, api: UpstreamApi, model: Model, *, drop_usage_chunk: bool) -> None:
        self.meter = SseMeter(api, drop_usage_chunk=drop_usage_chunk)
        self._api = api
        old, new = client_model_bytes(model)
        # None when the names are the same: nothing to replace.
        self._old: bytes | None = old if old != new else None
        self._new = new
        self._key = model_key(model)
        self._echo: EchoForms | None = echo_forms(self._key) if self._key else None
        self._upstream_model = model.upstream_model
        self._model_name = model.name

    @property
    def usage(self) -> Usage:
        return self.meter.usage

    @property
    def overflow(self) -> bool:
        """An event grew past MAX_SSE_EVENT_BYTES without ending: the stream is to be cut."""
        return self.meter.overflow

    def feed(self, data: bytes) -> bytes:
        out = self.meter.feed(data)
        if not out:
            return out
        if self._old is not None:
            out = out.replace(self._old, self._new)
        return self._outgoing(out)

    def flush(self) -> bytes:
        """The bytes of an event never ended, at the end of the stream (not renamed)."""
        return self._outgoing(self.meter.flush())

    def _outgoing(self, out: bytes) -> bytes:
        if self._echo is not None:
            out = scrub_event(out, self._echo)
        # Neither the word nor a \u escape that may spell it (upstream_errors.may_hold_error,
        # inline; the one byte's search first, the quicker one): no call for it.
        if b"error" not in out and (b"\\" not in out or b"\\u00" not in out):
            return out
        return rewrite_stream_errors(
            out,
            self._api,
            upstream_model=self._upstream_model,
            model_name=self._model_name,
            key=self._key,
        )
