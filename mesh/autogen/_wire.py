"""What travels between workers and the directory: plain dicts, lists and strings.

Subscriptions travel as ``{"kind", "id", "topic", "agent_type"}``; agent ids as ``[type, key]``;
messages as AutoGen's serializers encode them (``type`` name, ``ct`` content type, ``data`` bytes).
Nothing here is a pickle of a user's message.
"""

from __future__ import annotations

from typing import Any

from autogen_core import AgentId, Subscription, TopicId, TypePrefixSubscription, TypeSubscription

import mesh

__all__ = ["aid", "decode_sub", "encode_sub", "endpoint_from", "endpoint_ref", "sub_key", "topic", "unaid", "untopic"]

DIRECTORY_NAME = "autogen-directory"

# the kinds of a subscription on this package's own wire (not the mesh protocol's ops and kinds)
SUB_TYPE = "type"
SUB_PREFIX = "prefix"


def encode_sub(sub: Subscription) -> dict[str, str]:
    """A subscription as a dict, for the directory.

    Raises:
        ValueError: a kind of subscription the mesh cannot share (only ``TypeSubscription``,
            ``TypePrefixSubscription`` and their subclasses such as ``DefaultSubscription``).
    """
    if isinstance(sub, TypeSubscription):
        return {"kind": SUB_TYPE, "id": sub.id, "topic": sub.topic_type, "agent_type": sub.agent_type}
    if isinstance(sub, TypePrefixSubscription):
        return {"kind": SUB_PREFIX, "id": sub.id, "topic": sub.topic_type_prefix, "agent_type": sub.agent_type}
    raise ValueError(
        f"unsupported subscription type {type(sub).__name__}: the mesh runtime shares TypeSubscription and "
        "TypePrefixSubscription (and their subclasses) between workers"
    )


def decode_sub(d: dict[str, Any]) -> Subscription:
    kind, sid, topic_, agent_type = d["kind"], str(d["id"]), str(d["topic"]), str(d["agent_type"])
    if kind == SUB_TYPE:
        return TypeSubscription(topic_type=topic_, agent_type=agent_type, id=sid)
    if kind == SUB_PREFIX:
        return TypePrefixSubscription(topic_type_prefix=topic_, agent_type=agent_type, id=sid)
    raise ValueError(f"unknown subscription kind {kind!r}")


def sub_key(d: dict[str, Any]) -> tuple[str, str, str]:
    """Two workers that register the same type subscribe the same way: one delivery, not two."""
    return (str(d["kind"]), str(d["topic"]), str(d["agent_type"]))


def aid(agent_id: AgentId | None) -> list[str] | None:
    return None if agent_id is None else [agent_id.type, agent_id.key]


def unaid(v: Any) -> AgentId | None:
    if v is None:
        return None
    t, k = v
    return AgentId(str(t), str(k))


def topic(t: TopicId | None) -> list[str] | None:
    return None if t is None else [t.type, t.source]


def untopic(v: Any) -> TopicId | None:
    if v is None:
        return None
    t, s = v
    return TopicId(str(t), str(s))



def endpoint_ref(endpoint: Any) -> list[Any]:
    """A worker's endpoint (a mesh proxy) as plain data: what a request carries as its reply address,
    so deliveries stay msgpack (nothing to pickle on the sender, nothing to unpickle on the receiver)."""
    address, object_id, cls_name, methods, pool, inst = endpoint.__reduce__()[1][:6]  # endpoints are never durable
    return [address, object_id, cls_name, dict(methods), pool, inst]


def endpoint_from(ref: Any) -> Any:
    """The proxy of :func:`endpoint_ref`'s list (or a proxy as it is).

    Raises:
        ValueError: not such a list.
    """
    if isinstance(ref, mesh.RpcObject):
        return ref
    if not isinstance(ref, list) or len(ref) != 6:
        raise ValueError("a reply address is a list of 6 items")
    address, object_id, cls_name, methods, pool, inst = ref
    if not (isinstance(address, str) and isinstance(object_id, str) and isinstance(cls_name, str)
            and isinstance(methods, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in methods.items())
            and (pool is None or isinstance(pool, str)) and (inst is None or isinstance(inst, str))):
        raise ValueError("malformed reply address")
    return mesh.RpcObject(address, object_id, cls_name, methods, pool, inst)
