"""The server's objects: create (the constructor on a worker), delete, look up by name, read attributes."""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable

import transport
from mesh._core import context, hosted, ids, wire
from mesh._errors import CheckpointError
from mesh.server._calls import CallRunner, call_error, ok, remote_error
from mesh.server._checkpoint import Checkpoints, Moved, NotInStore, apply_state
from mesh.server._classes import ClassResolver
from mesh.server._create_many import BUILT, Batch, parse_body
from mesh.server._drains import Drains
from mesh.server._mailbox import Actor

__all__ = ["Objects"]

Reply = Callable[[Any], None]


class Objects:
    """Objects by id, and the registered names of detached ones.

    Args:
        runner: runs calls (and the constructor) on the worker pool.
        resolver: finds the class of an object to create.
        created: the fields of a ``create`` reply besides the object's own (limits, pool, run).
    """

    def __init__(
        self, runner: CallRunner, resolver: ClassResolver, created: Callable[[], dict], checkpoints: Checkpoints,
    ) -> None:
        self.runner = runner
        self.resolver = resolver
        self._created = created
        self.checkpoints = checkpoints
        self.actors: dict[str, Actor] = {}
        self.names: dict[str, str] = {}  # registered name -> object id (detached objects)
        self.reporting: set[str] = set()  # ids of objects with their own report (``__mesh_status__``)
        self._lock = threading.Lock()
        self._hosted = hosted.Registry(_describer(weakref.ref(self)))  # what `self` passed on travels as
        self._drains = Drains(runner, lambda job, on_block: self._construct(*job[:6], many=job[6], on_block=on_block))

    def get(self, object_id: str) -> Actor | None:
        return self.actors.get(object_id)

    def __len__(self) -> int:
        return len(self.actors)

    def create(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        """Op ``create`` (header checked): register the object, then run its constructor on a worker."""
        object_id, cls_ref, name = header["obj"], header["cls"], header.get("name")
        session = None if header.get("detached") else header.get("sess")
        actor = Actor(object_id, cls_ref.rpartition(":")[2], session, name)
        actor.durable = Checkpoints.options(header)
        with self._lock:
            if object_id in self.actors:
                problem = wire.err_entry(wire.K_BADREQUEST, f"object id {object_id!r} already exists")
            elif name is not None and name in self.names:
                problem = wire.err_entry(wire.K_EXISTS, f"an object named {name!r} already exists on this server")
            else:
                problem = None
                if name is not None:
                    self.names[name] = object_id
                self.actors[object_id] = actor
        if problem is not None:
            reply(problem)
            self.runner.drop_body(body, buffers)
            return
        if header.get("restore") is not None:
            self.runner.workers.submit(lambda: self._restore(actor, header, reply))
        elif cls_ref in self._drains.slow or actor.durable is not None:
            self.runner.workers.submit(lambda: self._construct(actor, cls_ref, body, buffers, reply, header))
        else:
            self._drains.add((actor, cls_ref, body, buffers, reply, header, None))

    def create_many(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        """Op ``create_many`` (header checked; see ``mesh.server._create_many``): register every
        object, then build them in turn; one reply when the last is built."""
        ids, cls_ref = header["objs"], header["cls"]
        parsed = parse_body(body, len(ids)) if not buffers else "unexpected buffer frames"
        if isinstance(parsed, str):  # refused whole, before anything changes
            reply(wire.err_entry(wire.K_BADREQUEST, f"malformed create_many request: {parsed}"))
            return
        items, blob, py = parsed
        many = {"blob": blob, "py": py} if blob is not None else {}
        session = None if header.get("detached") else header.get("sess")
        batch = Batch(len(ids), reply, self._created)
        short = cls_ref.rpartition(":")[2]
        jobs = []
        with self._lock:
            for i, object_id in enumerate(ids):
                if object_id in self.actors:
                    jobs.append((i, None))
                    continue
                actor = self.actors[object_id] = Actor(object_id, short, session, None)
                jobs.append((i, actor))
        for i, actor in jobs:
            if actor is None:
                batch.done(i, wire.err_entry(wire.K_BADREQUEST, f"object id {ids[i]!r} already exists"))
                continue
            job = (actor, cls_ref, items[i], [], lambda entry, i=i: batch.done(i, entry), _NO_HEADER, many)
            if cls_ref in self._drains.slow:
                self.runner.workers.submit(lambda job=job: self._construct(*job[:6], many=job[6]))
            else:
                self._drains.add(job)

    def _restore(self, actor: Actor, header: dict, reply: Reply) -> None:
        """A durable object's restart here (worker): claim it, then build it from its spec and checkpoint."""
        try:
            cls_ref, payload, state, has_state = self.checkpoints.restore(actor, header)
        except Moved as moved:
            self.drop(actor, "it was restarted on another server")
            reply(ok({"moved": {k: moved.record.get(k) for k in ("address", "inst", "gen")}}))
            return
        except NotInStore as exc:  # the caller tries another server
            self.drop(actor, "it is not in this server's state store")
            reply(wire.err_entry(wire.K_NOTFOUND, str(exc)))
            return
        except BaseException as exc:  # noqa: BLE001 - the caller is told why
            self.drop(actor, f"its restore failed: {exc}")
            reply(call_error(exc))
            return
        self._construct(actor, cls_ref, None, [], reply, header, payload, (state,) if has_state else None)

    def _construct(
        self, actor: Actor, cls_ref: str, body: Any, buffers: list, reply: Reply, header: dict,
        payload: Any = None, state: tuple | None = None, on_block: Callable[[], None] | None = None,
        many: dict | None = None,
    ) -> None:
        """Build one object (worker). ``many``: an item of a ``create_many`` (the batch's class
        blob, if any; answered ``BUILT``, the batch's reply carries the shared fields)."""
        try:
            if payload is None:
                payload = transport.decode(body, buffers)
                if many:
                    payload = {**payload, **many} if isinstance(payload, dict) else payload
            blob = payload.get("blob")
            if blob is not None:
                _check_py(cls_ref, payload)
            cls = self.resolver.resolve(cls_ref, blob)
            fallback = payload.get("fallback")  # the class by value, for when it is not importable here
            by_value = cls is None and isinstance(fallback, bytes)
            if by_value:
                _check_py(cls_ref, payload)
                cls = self.resolver.resolve(cls_ref, fallback)
            if cls is None:
                self.drop(actor, "its class could not be loaded")
                reply(wire.err_entry(wire.K_NEEDCLASS, f"class {cls_ref} is not importable here; send it by value"))
                return
            context.set_context(ids.new_chain(), on_block, _nothing if on_block is not None else None)
            try:
                with hosted.constructing(cls, self._hosted, actor):  # hosted from before its __init__ (mesh._core.hosted)
                    actor.obj = cls(*payload.get("args", ()), **payload.get("kwargs", {}))
            finally:
                context.set_context(None, None, None)
            hosted.host(self._hosted, actor.obj, actor)
            attrs = payload.get("attrs")
            if isinstance(attrs, dict) and isinstance(attrs.get("agent_id"), str):
                actor.obj.agent_id = attrs["agent_id"]
            extra = self._durable(actor, header, cls_ref, body, buffers, state)
        except BaseException as exc:  # noqa: BLE001 - report anything the constructor raises
            if actor.durable is not None and header.get("restore") is not None:
                self.checkpoints.fail(actor.id, actor.durable.record, f"cannot restore object {actor.id}: {exc}")
            self.drop(actor, f"its constructor raised {type(exc).__name__}")
            bad = isinstance(exc, transport.CodecError)  # the request's body, not the constructor
            reply(wire.err_entry(wire.K_BADREQUEST, str(exc)) if bad else remote_error(exc))
            return
        actor.cls_name = type(actor.obj).__name__
        if getattr(type(actor.obj), "__mesh_status__", None) is not None and actor.id in self.actors:
            self.reporting.add(actor.id)  # counted in ``ping``: ``zmq-agent-server list`` asks for its status
        if many is not None:
            reply(BUILT)
            self.runner.next(actor)
            return
        if by_value:
            extra = {**extra, "byvalue": 1}  # the caller sends this class by value from now on
        reply(ok({"methods": getattr(type(actor.obj), "_mesh_methods", {}), "cls": actor.cls_name, **self._created(),
                  **extra}))
        self.runner.next(actor)

    def _durable(self, actor: Actor, header: dict, cls_ref: str, body: Any, buffers: list, state: tuple | None) -> dict:
        """A durable object is built: restore its state, or record it in the store (worker)."""
        if actor.durable is None:
            return {}
        if header.get("restore") is None:
            return self.checkpoints.created(actor, header, cls_ref, body, buffers)
        if state is not None:
            try:
                apply_state(actor.obj, state[0])
            except BaseException as exc:  # noqa: BLE001
                raise CheckpointError(f"cannot restore object {actor.id}: load_state_dict() raised "
                                      f"{type(exc).__name__}: {exc}") from exc
        return self.checkpoints.reply_fields(actor.durable)

    def drop(self, actor: Actor, why: str) -> None:
        """The object goes: its queued calls are answered ``notfound``."""
        hosted.unhost(self._hosted, actor.obj)
        with self._lock:
            self.actors.pop(actor.id, None)
            self.reporting.discard(actor.id)
            if actor.name is not None and self.names.get(actor.name) == actor.id:
                del self.names[actor.name]
        for call in actor.fail(why):
            self.runner.unrun(call, wire.err_entry(wire.K_NOTFOUND, f"object {actor.id} is gone: {why}"))

    def delete(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        with self._lock:
            actor = self.actors.pop(header["obj"], None)
        if actor is None:
            reply(wire.err_entry(wire.K_NOTFOUND, f"no object {header['obj']!r} on this server"))
            return
        self.drop(actor, "deleted")
        self._forget(actor)
        reply(ok(None))

    def end_session(self, sess: str, why: str) -> None:
        """The objects a vanished client created go (detached ones stay)."""
        for actor in [a for a in list(self.actors.values()) if a.session == sess]:
            self.drop(actor, why)
            self._forget(actor)

    def _forget(self, actor: Actor) -> None:
        if actor.durable is not None:  # its checkpoint is stale now: removed, off the I/O thread
            try:
                self.runner.workers.submit(lambda: self.checkpoints.forget(actor))
            except RuntimeError:  # shutting down: the next scan of the store removes it
                pass

    def lookup(self, name: str) -> Actor | None:
        object_id = self.names.get(name)
        actor = self.actors.get(object_id) if object_id else None
        return None if actor is None or actor.obj is None else actor

    def getattr(self, header: dict, body: Any, buffers: list, reply: Reply) -> None:
        """Op ``getattr``: read a public attribute on a worker, outside the mailbox."""
        name = header["m"]
        if name.startswith("_"):
            reply(wire.err_entry(wire.K_REMOTE, f"{name!r} is private: private attributes are never read remotely", "AttributeError"))
            return
        actor = self.actors.get(header["obj"])
        if actor is None or actor.obj is None:
            reply(wire.err_entry(wire.K_NOTFOUND, f"no object {header['obj']!r} on this server"))
            return

        def read() -> None:
            try:
                reply(ok(getattr(actor.obj, name)))
            except BaseException as exc:  # noqa: BLE001
                reply(remote_error(exc))

        self.runner.workers.submit(read)

    def fail_queued(self, why: str) -> list:
        self._drains.queue.clear()  # not built: their objects go with the actors below
        """The server stops: every mailbox's queued calls, taken out (the actors keep a reason they had)."""
        queued = []
        for actor in list(self.actors.values()):
            queued.extend(actor.fail(why, keep_reason=True))
        return queued


_NO_HEADER: dict = {}  # a create_many item's header fields for _construct (none: not durable, not named)


def _nothing() -> None:
    pass


def _describer(objects: Any) -> Callable[[Actor, Any], tuple | None]:
    """What a hosted object travels as when pickled for the wire: its proxy's arguments (None: its
    server is gone, a value). ``objects``: the server's :class:`Objects`, weakly (the registry must
    not keep them)."""

    def describe(actor: Actor, obj: Any) -> tuple | None:
        me = objects()
        if me is None or me.actors.get(actor.id) is not actor:
            return None
        created = me._created()
        durable = None
        if actor.durable is not None:
            durable = {**me.checkpoints.reply_fields(actor.durable)["durable"], "sess": actor.session}
        return (me.checkpoints.address, actor.id, type(obj).__name__, dict(getattr(type(obj), "_mesh_methods", {})),
                created.get("pool"), created.get("inst"), durable)

    return describe


def _check_py(cls_ref: str, payload: dict) -> None:
    """A class sent by value must come from this server's Python version (cloudpickle's bytecode)."""
    if payload.get("py") not in (None, wire.PY_VERSION):
        raise RuntimeError(
            f"class {cls_ref} was sent by value from Python {payload.get('py')}, but this server "
            f"runs Python {wire.PY_VERSION}: cloudpickle needs the same version. Install the class on the "
            "server (--agent-dir) or use the same Python."
        )
