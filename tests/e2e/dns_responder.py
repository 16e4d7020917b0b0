"""A DNS responder on loopback UDP for end-to-end tests (standard library only).

Answers A and AAAA queries for any name with the addresses it holds (TTL 0), speaking the wire
format of RFC 1035 (header, echoed question, answers pointing at the question's name). sluice's
`dns` resolver is pointed at it with SLUICE_DNS_NAMESERVER=127.0.0.1:<port>; the machine's own
resolver configuration is never touched.

    dns = DnsResponder(["127.0.0.1", "127.0.0.2"]).start()
    dns.set(["127.0.0.1", "127.0.0.2", "127.0.0.3"])   # the next lookup sees three
    dns.stop()
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading


class DnsResponder:
    def __init__(self, addresses: list[str], host: str = "127.0.0.1"):
        self._lock = threading.Lock()
        self._addresses = [ipaddress.ip_address(a) for a in addresses]
        self.queries = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self._sock.settimeout(0.2)
        self.address = f"{host}:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> "DnsResponder":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def set(self, addresses: list[str]) -> None:
        with self._lock:
            self._addresses = [ipaddress.ip_address(a) for a in addresses]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, peer = self._sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                addresses = list(self._addresses)
                self.queries += 1
            reply = answer(query, addresses)
            if reply is not None:
                self._sock.sendto(reply, peer)


def answer(query: bytes, addresses) -> bytes | None:
    if len(query) < 12:
        return None
    at = 12
    while at < len(query) and query[at] != 0:
        at += 1 + query[at]
    if at + 5 > len(query):
        return None
    qtype = struct.unpack("!H", query[at + 1:at + 3])[0]
    question = query[12:at + 5]
    want = 4 if qtype == 1 else 6 if qtype == 28 else None
    records = [a for a in addresses if a.version == want]
    rd = query[2] & 1
    header = query[:2] + bytes([0x84 | rd, 0x80]) + struct.pack("!HHHH", 1, len(records), 0, 0)
    out = header + question
    for a in records:
        packed = a.packed
        out += b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 0, len(packed)) + packed
    return out
