"""Real guest-side traffic on loopback, for the fuzz seed corpus (run by netns.sh).

Servers stand in for idagent's gateway (DNS on the gateway addresses) and for the internet
(HTTP and a TLS listener that reads the ClientHello and hangs up); the clients are real: glibc's
resolver, curl, openssl s_client and Python's ssl module. All credentials below are fake.
"""

import os
import socket
import ssl
import struct
import subprocess
import threading
import time

GUEST4, GATEWAY4, REMOTE4 = "10.77.0.2", "10.77.0.1", "198.51.100.7"
GUEST6, GATEWAY6, REMOTE6 = "fd00:77::2", "fd00:77::1", "2001:db8::7"
FAKE_KEY = "sk-proj-FAKEfakeFAKEfake0123456789abcdefXYZ"


def dns_answer(query: bytes) -> bytes:
    """NXDOMAIN for anything: header with QR, RA and rcode 3, question echoed."""
    if len(query) < 12:
        return b""
    flags = 0x8000 | (struct.unpack("!H", query[2:4])[0] & 0x0100) | 0x0080 | 3
    qd = struct.unpack("!H", query[4:6])[0]
    end = 12
    for _ in range(qd):
        while end < len(query) and query[end] != 0:
            end += 1 + query[end]
        end += 5
    return query[:2] + struct.pack("!HHHHH", flags, qd, 0, 0, 0) + query[12:end]


def serve_dns_udp(addr, family):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((addr, 53))
    while True:
        data, peer = s.recvfrom(4096)
        s.sendto(dns_answer(data), peer)


def serve_dns_tcp(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 53))
    s.listen()
    while True:
        c, _ = s.accept()
        with c:
            n = struct.unpack("!H", c.recv(2))[0]
            q = b""
            while len(q) < n:
                q += c.recv(n - len(q))
            a = dns_answer(q)
            c.sendall(struct.pack("!H", len(a)) + a)


def serve_http(addr, family):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 8080))
    s.listen()
    body = b'{"access_token":"ya29.FAKEaccessTOKEN0123456789","token_type":"Bearer"}'
    while True:
        c, _ = s.accept()
        with c:
            req = b""
            while b"\r\n\r\n" not in req:
                chunk = c.recv(65536)
                if not chunk:
                    break
                req += chunk
            head, _, rest = req.partition(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    want = int(line.split(b":")[1])
                    while len(rest) < want:
                        rest += c.recv(65536)
            c.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Set-Cookie: session=FAKEsessionCOOKIE0123456789; Path=/; HttpOnly\r\n"
                + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                + body
            )


def serve_tls_sniffer(addr, family):
    """Reads what the client sends first (its ClientHello) and hangs up."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 8443))
    s.listen()
    while True:
        c, _ = s.accept()
        with c:
            c.settimeout(1)
            try:
                c.recv(65536)
                time.sleep(0.2)
                c.recv(65536)
            except OSError:
                pass


def start(fn, *args):
    threading.Thread(target=fn, args=args, daemon=True).start()


def run(cmd):
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=10, check=False)


def dns_query(name, qtype, rd=True, qid=None, edns=False):
    qid = os.getpid() & 0xFFFF if qid is None else qid
    q = struct.pack("!HHHHHH", qid, 0x0100 if rd else 0, 1, 0, 0, 1 if edns else 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack("!HH", qtype, 1)
    if edns:  # OPT: udp size 1232, DO bit
        q += b"\x00" + struct.pack("!HHIH", 41, 1232, 0x8000, 0)
    return q


def udp_exchange(family, src, dst, port, payload):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.settimeout(1)
    s.sendto(payload, (dst, port))
    try:
        s.recv(4096)
    except OSError:
        pass
    s.close()


def icmp_echo(family, src, dst):
    if family == socket.AF_INET:
        s = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        typ = 8
    else:
        s = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        typ = 128
    s.bind((src, 0))
    payload = b"idagent-fuzz-ping"
    hdr = struct.pack("!BBHHH", typ, 0, 0, 0x1234, 1)
    if family == socket.AF_INET:
        csum = inet_checksum(hdr + payload)
        hdr = struct.pack("!BBHHH", typ, 0, csum, 0x1234, 1)
    s.sendto(hdr + payload, (dst, 0))  # the kernel fills in the ICMPv6 checksum
    s.close()


def inet_checksum(data):
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def main():
    start(serve_dns_udp, GATEWAY4, socket.AF_INET)
    start(serve_dns_udp, GATEWAY6, socket.AF_INET6)
    start(serve_dns_tcp, GATEWAY4)
    start(serve_http, REMOTE4, socket.AF_INET)
    start(serve_tls_sniffer, REMOTE4, socket.AF_INET)
    start(serve_tls_sniffer, REMOTE6, socket.AF_INET6)
    time.sleep(0.3)

    # DNS: glibc's stub resolver (A and AAAA in parallel, EDNS), then hand-built queries.
    try:
        socket.getaddrinfo("api.openai.com", 443, proto=socket.IPPROTO_TCP)
    except OSError:
        pass
    udp_exchange(socket.AF_INET, GUEST4, GATEWAY4, 53, dns_query("example.com", 65, edns=True))
    udp_exchange(socket.AF_INET, GUEST4, GATEWAY4, 53, dns_query("_dmarc.example.org", 16))
    udp_exchange(socket.AF_INET6, GUEST6, GATEWAY6, 53, dns_query("pypi.org", 28, rd=False))
    s = socket.create_connection((GATEWAY4, 53), source_address=(GUEST4, 0))
    q = dns_query("registry.npmjs.org", 1, edns=True)
    s.sendall(struct.pack("!H", len(q)) + q)
    s.recv(4096)
    s.close()
    # Not DNS: an NTP client request, a UDP flow the stack surfaces like any other.
    udp_exchange(socket.AF_INET, GUEST4, REMOTE4, 123, b"\x23" + b"\x00" * 47)

    # HTTP with credentials in a header, a cookie, the query string and the body.
    run(["curl", "-sS", "--interface", GUEST4, "-H", f"Authorization: Bearer {FAKE_KEY}",
         "-H", "Cookie: session=FAKEsessionCOOKIE0123456789; theme=dark",
         "-d", "grant_type=password&username=alice&password=FAKEhunter2hunter2",
         f"http://{REMOTE4}:8080/v1/models?api_key=FAKEapiKEY0123456789&limit=5"])

    # TLS ClientHellos from four real clients.
    run(["curl", "-sS", "-k", "--interface", GUEST4, "--resolve", f"api.openai.com:8443:{REMOTE4}",
         "https://api.openai.com:8443/v1/models"])
    run(["curl", "-sS", "-k", "--interface", GUEST6, "--tlsv1.2", "--tls-max", "1.2",
         "--resolve", f"github.com:8443:{REMOTE6}", "https://github.com:8443/"])
    run(["openssl", "s_client", "-bind", f"{GUEST4}:0", "-connect", f"{REMOTE4}:8443",
         "-servername", "pypi.org", "-alpn", "h2,http/1.1", "-max_send_frag", "512"])
    for sni, version in (("example.com", None), (None, ssl.TLSVersion.TLSv1_2)):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        if version:
            ctx.maximum_version = version
        raw = socket.create_connection((REMOTE4, 8443), source_address=(GUEST4, 0), timeout=2)
        try:
            ctx.wrap_socket(raw, server_hostname=sni)
        except OSError:
            pass
        raw.close()

    # A SYN to a closed port (answered by a RST), and pings to the gateway and beyond.
    try:
        socket.create_connection((REMOTE4, 22), source_address=(GUEST4, 0), timeout=1)
    except OSError:
        pass
    icmp_echo(socket.AF_INET, GUEST4, GATEWAY4)
    icmp_echo(socket.AF_INET, GUEST4, REMOTE4)
    icmp_echo(socket.AF_INET6, GUEST6, GATEWAY6)
    time.sleep(0.5)


if __name__ == "__main__":
    main()
