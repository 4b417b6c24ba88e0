"""Cuts a loopback capture (from netns.sh) into the seed corpora of the fuzz targets.

Usage: extract.py CAPTURE.pcap CORPUS_DIR. Only the standard library: the pcap and IP/TCP/UDP
headers are read here directly, so the seeds do not depend on the code they are meant to test.
"""

import hashlib
import ipaddress
import math
import struct
import sys
from collections import OrderedDict
from pathlib import Path

GUESTS = {ipaddress.ip_address("10.77.0.2"), ipaddress.ip_address("fd00:77::2")}


def read_pcap(path):
    data = Path(path).read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    assert linktype == 1, f"expected an ethernet-framed loopback capture, got linktype {linktype}"
    off = 24
    while off + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        ethertype = struct.unpack("!H", frame[12:14])[0]
        if ethertype in (0x0800, 0x86DD):
            yield sec + usec / 1e6, frame[14:]


class Packet:
    def __init__(self, ts, raw):
        self.ts, self.raw = ts, raw
        if raw[0] >> 4 == 4:
            ihl = (raw[0] & 0x0F) * 4
            self.proto = raw[9]
            self.src = ipaddress.ip_address(raw[12:16])
            self.dst = ipaddress.ip_address(raw[16:20])
            self.l4 = raw[ihl:struct.unpack("!H", raw[2:4])[0]]
        else:
            self.proto = raw[6]
            self.src = ipaddress.ip_address(raw[8:24])
            self.dst = ipaddress.ip_address(raw[24:40])
            self.l4 = raw[40:40 + struct.unpack("!H", raw[4:6])[0]]
        self.sport = self.dport = None
        self.payload = b""
        self.flags = 0
        self.seq = 0
        if self.proto == 6:
            self.sport, self.dport, self.seq = struct.unpack("!HHI", self.l4[:8])
            self.flags = self.l4[13]
            self.payload = self.l4[(self.l4[12] >> 4) * 4:]
        elif self.proto == 17:
            self.sport, self.dport = struct.unpack("!HH", self.l4[:4])
            self.payload = self.l4[8:]

    @property
    def syn(self):
        return bool(self.flags & 0x02)

    def flow(self):
        """Direction-independent flow key."""
        a, b = (self.src, self.sport), (self.dst, self.dport)
        return (self.proto,) + tuple(sorted([a, b], key=str))


def write(dirpath, name, data):
    dirpath.mkdir(parents=True, exist_ok=True)
    (dirpath / name).write_bytes(data)


def stream(packets, port, to_server):
    """TCP payload in one direction of each flow with `port`, in sequence order, by flow."""
    flows = OrderedDict()
    for p in packets:
        if p.proto != 6 or port not in (p.sport, p.dport) or not p.payload:
            continue
        if (p.dport == port) != to_server:
            continue
        flows.setdefault(p.flow(), {})[p.seq] = p.payload
    for key, segs in flows.items():
        yield key, b"".join(segs[s] for s in sorted(segs))


def netstack_record(prev_ts, p):
    """`[dt][hdr][packet]` as the netstack_receive target reads it (see its docs)."""
    ms = 0 if prev_ts is None else max(0.0, (p.ts - prev_ts) * 1000)
    step = min(127, round(math.sqrt(ms / 16)))
    header = len(p.raw)
    if p.proto == 6 and not p.syn:
        header |= 0x8000  # let the harness match the ack to the stack's sequence numbers
    return bytes([step]) + struct.pack("!H", header) + p.raw


def main():
    pcap, corpus = sys.argv[1], Path(sys.argv[2])
    packets = [Packet(ts, raw) for ts, raw in read_pcap(pcap)]

    seen = set()
    for i, p in enumerate(packets):
        digest = hashlib.sha1(p.raw).hexdigest()
        if digest not in seen:
            seen.add(digest)
            kind = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6"}.get(p.proto, str(p.proto))
            write(corpus / "netstack_classify", f"{i:03d}-{kind}-v{p.raw[0] >> 4}", p.raw)

    guest = [p for p in packets if p.src in GUESTS]
    flows = OrderedDict()
    for p in guest:
        flows.setdefault(p.flow(), []).append(p)
    for n, (key, flow) in enumerate(flows.items()):
        proto = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6"}.get(key[0], str(key[0]))
        port = flow[0].dport if flow[0].dport is not None else 0
        records, prev = b"", None
        for p in flow:
            records += netstack_record(prev, p)
            prev = p.ts
        write(corpus / "netstack_receive", f"flow{n:02d}-{proto}-{port}", records)
    records, prev = b"", None
    for p in guest:
        records += netstack_record(prev, p)
        prev = p.ts
    write(corpus / "netstack_receive", "all-guest-packets", records)

    dns = corpus / "dns_parse_query"
    for i, p in enumerate(packets):
        if p.proto == 17 and 53 in (p.sport, p.dport):
            write(dns, f"{i:03d}-udp-{'query' if p.dport == 53 else 'response'}", p.payload)
    for to_server in (True, False):
        for n, (_, data) in enumerate(stream(packets, 53, to_server)):
            while len(data) >= 2:
                size = struct.unpack("!H", data[:2])[0]
                write(dns, f"tcp{n}-{'query' if to_server else 'response'}", data[2:2 + size])
                data = data[2 + size:]

    tls = corpus / "tls_client_hello"
    clients = ["curl-tls13-v4", "curl-tls12-v6", "openssl-s_client", "python-sni", "python-tls12-nosni"]
    for n, (_, data) in enumerate(stream(packets, 8443, True)):
        name = clients[n] if n < len(clients) else f"client{n}"
        write(tls, name, data)
        if n == 0:
            # The same hello re-framed as 100-byte records (what a client may legally send).
            length = struct.unpack("!H", data[3:5])[0]
            body, split = data[5:5 + length], b""
            for at in range(0, len(body), 100):
                chunk = body[at:at + 100]
                split += bytes([22, 3, 1]) + struct.pack("!H", len(chunk)) + chunk
            write(tls, name + "-split-records", split)
            write(tls, name + "-prefix", data[:7])

    for to_server in (True, False):
        for n, (_, data) in enumerate(stream(packets, 8080, to_server)):
            write(corpus / "redact_text", f"http{n}-{'request' if to_server else 'response'}", data)


if __name__ == "__main__":
    main()
