#!/usr/bin/env bash
# Regenerates the reference captures in captures/{python-scrape,node-openai,go-escape}/:
# one hermetic run of each victim against the local fakes (audit.jsonl, traffic.pcapng,
# report.html). Needs root, Docker and a release build (make captures does both).
set -euo pipefail
cd "$(dirname "$0")/.."
idagent=${IDAGENT:-./target/x86_64-unknown-linux-gnu/release/idagent}
fakes_bin=${IDAGENT_FAKES:-./target/x86_64-unknown-linux-gnu/release/idagent-fakes}
[ -x "$fakes_bin" ] || cargo build --release -p idagent-fakes
work=$(mktemp -d)
trap 'kill "$fakes_pid" 2>/dev/null || true; wait "$fakes_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
"$fakes_bin" --dir "$work/fakes" > "$work/flags" 2> "$work/fakes.log" &
fakes_pid=$!
for _ in $(seq 1 50); do [ -s "$work/flags" ] && grep -q upstream-ca "$work/flags" && break; sleep 0.2; done
mapfile -t flags < "$work/flags"
for victim in python-scrape node-openai go-escape; do
  out=captures/$victim
  rm -rf "$out"
  extra=()
  [ "$victim" = node-openai ] && extra=(--env OPENAI_API_KEY=sk-idagent-reference-capture-0000DEMO)
  "$idagent" run --offline "${flags[@]}" "${extra[@]}" --run-dir "$work/$victim" "victims/$victim" || true
  mkdir -p "$out"
  for f in audit.jsonl traffic.pcapng report.html; do
    [ -f "$work/$victim/$f" ] && cp "$work/$victim/$f" "$out/$f"
  done
  chmod 0644 "$out"/*
done
echo "captures regenerated: captures/{python-scrape,node-openai,go-escape}"
