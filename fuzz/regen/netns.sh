#!/usr/bin/env bash
# Runs inside a fresh network and mount namespace (see ../regen-corpus.sh): only a loopback
# interface exists, so every packet captured here is loopback traffic between the guest
# address and the addresses it dials. Usage: netns.sh OUT_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$1

# The guest's addresses and the stack's gateways (idagent-netstack's StackConfig::default),
# plus one documentation address per family for "the internet".
ip link set lo up
ip addr add 10.77.0.1/32 dev lo
ip addr add 10.77.0.2/24 dev lo
ip addr add 198.51.100.7/32 dev lo
ip -6 addr add fd00:77::1/128 dev lo nodad
ip -6 addr add fd00:77::2/64 dev lo nodad
ip -6 addr add 2001:db8::7/128 dev lo nodad
# Every IPv4 connection leaves from the guest address, as it would from a guest, even for
# tools that cannot bind (glibc's resolver).
ip route replace local 10.77.0.1 dev lo table local proto kernel scope host src 10.77.0.2
ip route replace local 198.51.100.7 dev lo table local proto kernel scope host src 10.77.0.2

# The guest's resolver is the gateway, as in a real run.
printf 'nameserver 10.77.0.1\noptions edns0 trust-ad attempts:1 timeout:1\n' > "$out/resolv.conf"
mount --bind "$out/resolv.conf" /etc/resolv.conf

dumpcap -q -i lo -P -w "$out/loopback.pcap" 2>"$out/dumpcap.log" &
dumpcap_pid=$!
# dumpcap prints nothing useful on readiness; wait for the file header.
for _ in $(seq 50); do [ -s "$out/loopback.pcap" ] && break; sleep 0.1; done
sleep 0.5
kill -0 "$dumpcap_pid" || { cat "$out/dumpcap.log" >&2; exit 1; }

python3 "$here/traffic.py"

sleep 0.5
kill -INT "$dumpcap_pid"
wait "$dumpcap_pid" || true
