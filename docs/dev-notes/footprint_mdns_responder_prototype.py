"""Prototype, imported by nothing (NOTES-footprint.md): an advertise-only mDNS responder without
zeroconf or asyncio, IPv4, one interface (loopback here). Answers PTR/SRV/TXT/A questions for its
own records (multicast; unicast for QU; legacy unicast with TTL <= 10 for queries from another
port, as discovery._oneshot sends), announces twice, says goodbye (TTL 0) when stopped.

    python footprint_mdns_responder_prototype.py NAME PORT    # serves until stdin closes
"""
import os, select, socket, struct, sys, threading, time

GROUP, PORT = "224.0.0.251", 5353
PTR, TXT, SRV, A, ANY = 12, 16, 33, 1, 255
FLUSH = 0x8000

def name_bytes(name):
    out = b""
    for label in name.rstrip(".").split("."):
        b = label.encode()
        out += bytes([len(b)]) + b
    return out + b"\0"

def read_name(msg, off):
    labels, jumped, end = [], False, off
    for _ in range(128):
        n = msg[off]
        if n & 0xC0 == 0xC0:
            ptr = ((n & 0x3F) << 8) | msg[off + 1]
            if not jumped:
                end = off + 2
            off, jumped = ptr, True
            continue
        if n == 0:
            return ".".join(labels) + ".", (end if jumped else off + 1)
        labels.append(msg[off + 1: off + 1 + n].decode("utf-8", "replace"))
        off += 1 + n
    raise ValueError("name loop")

class Responder:
    def __init__(self, service_type, instance, port, addresses, txt, iface="127.0.0.1"):
        self.st, self.inst, self.port, self.addrs, self.iface = service_type, instance, port, addresses, iface
        self.txt = b"".join(bytes([len(x)]) + x for x in (f"{k}={v}".encode() for k, v in txt.items()))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("", PORT))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(GROUP) + socket.inet_aton(iface))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        self.sock = s
        self.stop = threading.Event()

    def rr(self, name, typ, flush, ttl, rdata):
        return name_bytes(name) + struct.pack("!HHIH", typ, 1 | (FLUSH if flush else 0), ttl, len(rdata)) + rdata

    def records(self, ttl_scale=1.0, flush=True, cap=None):
        t = lambda x: int(x * ttl_scale) if cap is None else min(cap, int(x * ttl_scale))
        ptr = self.rr(self.st, PTR, False, t(4500), name_bytes(self.inst))
        srv = self.rr(self.inst, SRV, flush, t(120), struct.pack("!HHH", 0, 0, self.port) + name_bytes(self.inst))
        txt = self.rr(self.inst, TXT, flush, t(4500), self.txt)
        a = [self.rr(self.inst, A, flush, t(120), socket.inet_aton(x)) for x in self.addrs]
        return ptr, srv, txt, a

    def message(self, answers, additionals, qid=0, questions=b"", qd=0):
        return struct.pack("!HHHHHH", qid, 0x8400, qd, len(answers), 0, len(additionals)) + questions + b"".join(answers) + b"".join(additionals)

    def announce(self, ttl_scale=1.0):
        ptr, srv, txt, a = self.records(ttl_scale)
        self.sock.sendto(self.message([ptr, srv, txt, *a], []), (GROUP, PORT))

    def answer(self, msg, src):
        qid, flags, qd = struct.unpack_from("!HHH", msg)
        if flags & 0x8000:
            return  # a response
        off, want, qbytes = 12, set(), b""
        for _ in range(qd):
            start = off
            name, off = read_name(msg, off)
            qtype, qclass = struct.unpack_from("!HH", msg, off)
            off += 4
            n = name.lower()
            if n == self.st.lower() and qtype in (PTR, ANY):
                want.add("ptr")
            elif n == self.inst.lower():
                want.update({SRV: ["srv"], TXT: ["txt"], A: ["a"], ANY: ["srv", "txt", "a"]}.get(qtype, []))
            else:
                continue
            qbytes += name_bytes(name) + struct.pack("!HH", qtype, qclass & 0x7FFF)
            qu = bool(qclass & 0x8000)
        if not want:
            return
        legacy = src[1] != PORT
        ptr, srv, txt, a = self.records(flush=not legacy, cap=10 if legacy else None)
        chosen = {"ptr": [ptr], "srv": [srv], "txt": [txt], "a": a}
        answers = [r for k in ("ptr", "srv", "txt", "a") if k in want for r in chosen[k]]
        extra = [] if "ptr" not in want else [r for k in ("srv", "txt", "a") if k not in want for r in chosen[k]]
        if legacy:
            self.sock.sendto(self.message(answers, extra, qid, qbytes, len(qbytes and [1]) and qd), src)
        else:
            self.sock.sendto(self.message(answers, extra), (GROUP, PORT))
            if qu:
                self.sock.sendto(self.message(answers, extra), src)

    def run(self):
        self.announce(); next_ann = time.monotonic() + 1.0; n_ann = 1
        while not self.stop.is_set():
            r, _, _ = select.select([self.sock], [], [], 0.2)
            if r:
                msg, src = self.sock.recvfrom(9000)
                try:
                    self.answer(msg, src)
                except (ValueError, IndexError, struct.error):
                    pass
            if n_ann < 2 and time.monotonic() >= next_ann:
                self.announce(); n_ann += 1
        self.announce(0.0)  # goodbye

if __name__ == "__main__":
    st = "_agentmesh._tcp.local."
    name = sys.argv[1]
    r = Responder(st, f"{name}.{st}", int(sys.argv[2]), ["127.0.0.1"],
                  {"txtvers": "1", "proto": "1", "name": name, "cap": "32", "auth": "0", "py": "3.11", "pid": str(os.getpid())})
    t = threading.Thread(target=r.run, daemon=True); t.start()
    print("ready", flush=True)
    sys.stdin.read()
    r.stop.set(); t.join(2)
