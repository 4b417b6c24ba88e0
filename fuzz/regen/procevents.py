"""Records real proc connector datagrams from this kernel, for the procevents_wire seeds.

Usage (root: the proc connector needs CAP_NET_ADMIN): procevents.py CORPUS_DIR/procevents_wire
Subscribes like idagent does (`wire::subscribe_message`), then forks, execs, exits with a code,
dies by a signal and changes its uid, and saves every datagram the kernel sends meanwhile
(the subscribe ack included), one file each, as received.
"""

import os
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path

NETLINK_CONNECTOR = 11
CN_IDX_PROC = CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE = 1, 2
NLMSG_DONE = 3


def control(op):
    cn = struct.pack("=IIIIHH", CN_IDX_PROC, CN_VAL_PROC, 0, 0, 4, 0) + struct.pack("=I", op)
    return struct.pack("=IHHII", 16 + len(cn), NLMSG_DONE, 0, 0, os.getpid()) + cn


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    s.bind((os.getpid(), CN_IDX_PROC))
    s.send(control(PROC_CN_MCAST_LISTEN))

    # Children: exec + exit 3; killed by SIGKILL; setuid then exit 0.
    pid = os.fork()
    if pid == 0:
        os.execv("/bin/sh", ["sh", "-c", "exit 3"])
    os.waitpid(pid, 0)
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    pid = os.fork()
    if pid == 0:
        os.setgid(65534)
        os.setuid(65534)
        os._exit(0)
    os.waitpid(pid, 0)

    # Other processes on the host show up too; two of each kind are plenty.
    kinds = {}
    saved = []
    deadline = time.time() + 1.0
    while time.time() < deadline:
        ready, _, _ = select.select([s], [], [], 0.2)
        if not ready:
            continue
        data = s.recv(65536)
        kind = describe(data)
        kinds[kind] = kinds.get(kind, 0) + 1
        if kinds[kind] <= 2:
            (out / f"{len(saved):02d}-{kind}").write_bytes(data)
            saved.append(data)
    s.send(control(PROC_CN_MCAST_IGNORE))
    s.close()
    if not saved:
        sys.exit("no proc connector datagrams received")
    # Derived: the parser also walks several netlink messages in one datagram.
    (out / "derived-all-in-one-datagram").write_bytes(b"".join(saved))


def describe(data):
    if len(data) < 16 + 20 + 4:
        return "short"
    what = struct.unpack("=I", data[36:40])[0]
    return {0: "ack", 1: "fork", 2: "exec", 4: "uid", 0x40: "gid", 0x80000000: "exit"}.get(
        what, f"what{what:x}")


if __name__ == "__main__":
    main()
