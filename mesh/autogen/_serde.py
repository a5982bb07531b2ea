"""Messages as AutoGen's serializers encode them: (type name, content type, bytes), never a pickle.

:class:`Codec` is a worker's serializer registry plus its payload format. A sender learns the
serializer of a dataclass / pydantic / protobuf message it sends; a result type it has no serializer
for is learnt only from a class already imported here (nothing is imported on a peer's say-so).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from autogen_core import JSON_DATA_CONTENT_TYPE, MessageSerializer, UnknownPayload, try_get_known_serializers_for_type

from ._errors import MessageSerializationError

__all__ = ["JSON_VALUE", "Codec", "type_name_of"]

JSON_VALUE = "mesh.autogen.json"  # type name of a plain JSON value (None, str, number, list, dict) as a result


def type_name_of(message: Any) -> str:
    """AutoGen's type name: a protobuf's full name, otherwise the class name."""
    cls = type(message)
    descriptor = getattr(cls, "DESCRIPTOR", None)
    full_name = getattr(descriptor, "full_name", None)
    if isinstance(full_name, str) and hasattr(message, "SerializeToString"):
        return full_name
    return cls.__name__


def encode_json(value: Any) -> tuple[str, str, bytes]:
    return JSON_VALUE, JSON_DATA_CONTENT_TYPE, json.dumps(value).encode()


class Codec:
    """AutoGen's serializer registry, (type name, content type) -> serializer, and the format to send in."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self._by_key: dict[tuple[str, str], MessageSerializer[Any]] = {}

    def add(self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]) -> None:
        if isinstance(serializer, Sequence):
            for s in serializer:
                self.add(s)
            return
        self._by_key[(serializer.type_name, serializer.data_content_type)] = serializer

    def get(self, type_name: str, content_type: str) -> MessageSerializer[Any] | None:
        return self._by_key.get((type_name, content_type))

    def encode(self, message: Any) -> tuple[str, str, bytes]:
        type_name = type_name_of(message)
        serializer = self.get(type_name, self.fmt)
        if serializer is None:  # a dataclass, pydantic model or protobuf: AutoGen knows how; learn it once
            self.add(try_get_known_serializers_for_type(type(message)))
            serializer = self.get(type_name, self.fmt)
        if serializer is None:
            raise MessageSerializationError(
                f"no serializer registered for message type {type_name!r} (content type {self.fmt}): messages "
                "travel encoded by AutoGen's serializers; use a dataclass or a pydantic model, or register one "
                "with runtime.add_message_serializer(...)"
            )
        return type_name, self.fmt, serializer.serialize(message)

    def decode(self, type_name: str, content_type: str, data: bytes) -> Any:
        if type_name == JSON_VALUE:
            return json.loads(data)
        serializer = self.get(type_name, content_type)
        if serializer is None:
            return UnknownPayload(type_name, content_type, data)
        return serializer.deserialize(data)

    def encode_result(self, value: Any) -> tuple[str, str, bytes]:
        if value is None or isinstance(value, (str, int, float, bool)):
            return encode_json(value)
        return self.encode(value)

    def decode_result(self, item: dict) -> Any:
        """A response item's value, learning the result's serializer first if the class is known here."""
        type_name, ct = str(item["type"]), str(item["ct"])
        if self.get(type_name, ct) is None:
            self.learn(type_name, ct, item.get("py"))
        return self.decode(type_name, ct, bytes(item["data"]))

    def learn(self, type_name: str, content_type: str, where: Any) -> None:
        """A result's type this worker has no serializer for: when the caller has that class already
        imported (``module:qualname`` sent along, looked up in ``sys.modules`` only: nothing is imported
        on a peer's say-so), learn AutoGen's serializer for it, so ``send_message`` returns the object."""
        if not isinstance(where, str) or ":" not in where:
            return
        module_name, _, qualname = where.partition(":")
        obj: Any = sys.modules.get(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part, None) if obj is not None else None
        if isinstance(obj, type):
            known = [k for k in try_get_known_serializers_for_type(obj)
                     if k.type_name == type_name and k.data_content_type == content_type]
            self.add(known)
