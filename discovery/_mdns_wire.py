"""DNS messages for the plain mDNS responder: read a query, write records (RFC 1035, RFC 6762).

Only what an advertise-only responder needs. Reading is defensive: a datagram from the network
may be anything, so every read is bounded (questions, known answers, name length, compression
pointers that must point backwards) and any malformation raises :class:`ValueError`. Nothing here
evaluates what it reads beyond comparing names and types.
"""

from __future__ import annotations

import struct

__all__ = [
    "A",
    "ANY",
    "PTR",
    "SRV",
    "TXT",
    "Query",
    "Writer",
    "encode_txt",
    "parse_query",
]

A, PTR, TXT, AAAA, SRV, ANY = 1, 12, 16, 28, 33, 255
CLASS_IN = 1
_QU = 0x8000  # question: unicast response wanted (RFC 6762 §5.4)
_FLUSH = 0x8000  # record: cache-flush bit (RFC 6762 §10.2)
_QR = 0x8000  # header: a response
_OPCODE = 0x7800
_AA = 0x0400  # authoritative answer (every mDNS response sets it)
_MAX_QUESTIONS = 64
_MAX_KNOWN = 256  # known answers read (the rest are ignored)
_MAX_NAME = 255  # bytes on the wire (RFC 1035 §3.1)
_HEADER = struct.Struct("!6H")


class Query:
    """A parsed query: its id, its questions and its known answers (RFC 6762 §7.1).

    (A plain class: ``dataclasses`` imports ``inspect``, ~0.7 MiB of an advertising server's memory.)
    """

    __slots__ = ("id", "questions", "known")

    def __init__(self, id: int, questions: list[tuple[str, int, bool]] | None = None,
                 known: list[tuple[str, int, str, int]] | None = None) -> None:
        self.id = id
        self.questions: list[tuple[str, int, bool]] = [] if questions is None else questions
        """``(lower-case name, type, unicast response wanted)`` for class IN or ANY."""
        self.known: list[tuple[str, int, str, int]] = [] if known is None else known
        """``(lower-case name, type, lower-case target of a PTR or "", ttl)``."""

    def __eq__(self, other: object) -> bool:
        if type(other) is not Query:
            return NotImplemented
        return (self.id, self.questions, self.known) == (other.id, other.questions, other.known)  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Query(id={self.id!r}, questions={self.questions!r}, known={self.known!r})"


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """A (possibly compressed) name at ``offset``: ``(lower-case dotted name, offset after it)``."""
    labels: list[str] = []
    end = -1
    size = 0
    floor = offset  # a pointer must point before where the name started: no loops
    while True:
        if offset >= len(data):
            raise ValueError("name runs past the end")
        n = data[offset]
        if n & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise ValueError("truncated pointer")
            target = ((n & 0x3F) << 8) | data[offset + 1]
            if target >= floor:
                raise ValueError("forward or looping compression pointer")
            if end < 0:
                end = offset + 2
            offset = floor = target
            continue
        if n & 0xC0:
            raise ValueError("unknown label type")
        if n == 0:
            name = ".".join(labels) + "."
            return name.lower(), (end if end >= 0 else offset + 1)
        label = data[offset + 1 : offset + 1 + n]
        if len(label) != n:
            raise ValueError("label runs past the end")
        size += n + 1
        if size > _MAX_NAME:
            raise ValueError("name too long")
        labels.append(label.decode("utf-8", "replace"))
        offset += 1 + n


def parse_query(data: bytes) -> Query | None:
    """The query in ``data``; ``None`` for a response or another opcode (ignored, not an error).

    Raises:
        ValueError: the datagram is not a well-formed DNS message.
    """
    if len(data) < _HEADER.size:
        raise ValueError("shorter than a DNS header")
    qid, flags, qdcount, ancount, _ns, _ar = _HEADER.unpack_from(data)
    if flags & _QR or flags & _OPCODE:
        return None
    if qdcount > _MAX_QUESTIONS:
        raise ValueError("too many questions")
    query = Query(qid)
    offset = _HEADER.size
    for _ in range(qdcount):
        name, offset = _read_name(data, offset)
        if offset + 4 > len(data):
            raise ValueError("truncated question")
        qtype, qclass = struct.unpack_from("!HH", data, offset)
        offset += 4
        if qclass & 0x7FFF in (CLASS_IN, ANY):
            query.questions.append((name, qtype, bool(qclass & _QU)))
    for _ in range(min(ancount, _MAX_KNOWN)):
        name, offset = _read_name(data, offset)
        if offset + 10 > len(data):
            raise ValueError("truncated record")
        rtype, _rclass, ttl, rdlength = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        if offset + rdlength > len(data):
            raise ValueError("record data runs past the end")
        target = _read_name(data, offset)[0] if rtype == PTR else ""
        offset += rdlength
        query.known.append((name, rtype, target, ttl))
    return query


def encode_txt(properties: dict[str, str]) -> bytes:
    """TXT record data: one ``key=value`` string each (at most 255 bytes each)."""
    out = bytearray()
    for key, value in properties.items():
        item = f"{key}={value}".encode()[:255]
        out += bytes([len(item)]) + item
    return bytes(out) or b"\0"


class Writer:
    """Build one DNS message with name compression."""

    def __init__(self, qid: int = 0, flags: int = _QR | _AA) -> None:
        self._buf = bytearray(_HEADER.size)
        self._names: dict[str, int] = {}
        self._id = qid
        self._flags = flags
        self._counts = [0, 0, 0, 0]
        self._section = 0

    def _name(self, name: str) -> None:
        labels = [label for label in name.split(".") if label]
        for i in range(len(labels)):
            suffix = ".".join(labels[i:]).lower()
            pointer = self._names.get(suffix)
            if pointer is not None:
                self._buf += struct.pack("!H", 0xC000 | pointer)
                return
            if len(self._buf) < 0x3FFF:
                self._names[suffix] = len(self._buf)
            raw = labels[i].encode()[:63]
            self._buf += bytes([len(raw)]) + raw
        self._buf += b"\0"

    def question(self, name: str, qtype: int) -> None:
        if any(self._counts[1:]):
            raise ValueError("questions come before records")
        self._name(name)
        self._buf += struct.pack("!HH", qtype, CLASS_IN)
        self._counts[0] += 1

    def record(self, section: int, name: str, rtype: int, ttl: int, *rdata: bytes | str, flush: bool = False) -> None:
        """Add a record to section 1 (answers) or 3 (additional); ``rdata``: bytes and names (str), in order.

        Sections must be written in order.
        """
        if section < self._section:
            raise ValueError("sections come in order")
        self._section = section
        self._name(name)
        self._buf += struct.pack("!HHI", rtype, CLASS_IN | (_FLUSH if flush else 0), ttl)
        at = len(self._buf)
        self._buf += b"\0\0"
        for part in rdata:
            if isinstance(part, str):
                self._name(part)
            else:
                self._buf += part
        struct.pack_into("!H", self._buf, at, len(self._buf) - at - 2)
        self._counts[section] += 1

    def bytes(self) -> bytes:
        _HEADER.pack_into(self._buf, 0, self._id, self._flags, *self._counts)
        return bytes(self._buf)
