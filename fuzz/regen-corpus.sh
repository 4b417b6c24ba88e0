#!/usr/bin/env bash
# Regenerates the seed corpora in fuzz/corpus/ from real traffic:
#   - a loopback capture (regen/netns.sh + regen/traffic.py, in a fresh network namespace
#     whose only interface is `lo`, holding the guest's and the gateway's addresses): DNS
#     queries from glibc's resolver and hand-built ones, an HTTP request with (fake)
#     credentials from curl, TLS ClientHellos from curl, openssl s_client and Python's ssl,
#     a SYN to a closed port, pings. regen/extract.py cuts it into per-target seeds and the
#     capture itself is kept as regen/loopback.pcap;
#   - real proc connector datagrams from this kernel (regen/procevents.py);
#   - the guest init's hello line, written as ctl.rs's `send_hello` formats it.
# Needs root (network namespace, proc connector), dumpcap, python3, curl and openssl.
# The old seeds are replaced; fuzzing-found inputs live in the same directories, so commit
# what you want to keep first. Usage: fuzz/regen-corpus.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
corpus="$here/corpus"
for tool in dumpcap python3 curl openssl unshare ip; do
    command -v "$tool" >/dev/null || { echo "regen-corpus: $tool not found" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "regen-corpus: needs root (netns, proc connector)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

unshare --net --mount -- "$here/regen/netns.sh" "$work"
cp "$work/loopback.pcap" "$here/regen/loopback.pcap"

targets="netstack_classify netstack_receive dns_parse_query tls_client_hello redact_text procevents_wire ctl_hello"
for t in $targets; do rm -rf "${corpus:?}/$t"; mkdir -p "$corpus/$t"; done

python3 "$here/regen/extract.py" "$here/regen/loopback.pcap" "$corpus"
python3 "$here/regen/procevents.py" "$corpus/procevents_wire"

# ctl_hello: `[fd spec][hello bytes]` (see fuzz_targets/ctl_hello.rs); the line is exactly what
# `idagent_guest::ctl::send_hello` sends: `idagent-init <PROTOCOL_VERSION> <guest pid>\n`.
ctl="$corpus/ctl_hello"
printf '\001idagent-init 1 1\n' > "$ctl/hello-one-fd"
printf '\000idagent-init 1 1\n' > "$ctl/hello-no-fd"
printf '\002idagent-init 1 4242\n' > "$ctl/hello-two-fds"
printf '\011idagent-init 1 1\n' > "$ctl/hello-nine-fds"
printf '\001idagent-init 2 1\n' > "$ctl/hello-other-version"
printf '\001idagent-init 1 1' > "$ctl/hello-no-newline"

for t in $targets; do
    printf '%-20s %3d seeds\n' "$t" "$(find "$corpus/$t" -type f | wc -l)"
done
