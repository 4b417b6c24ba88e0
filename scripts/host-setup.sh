#!/usr/bin/env bash
# Makes a fresh Debian/Ubuntu machine ready for idagent: installs what it lacks and starts a
# Docker Engine if none answers. Shared by `make demo` (mode `demo`: what a run needs) and
# `.ci/run` (mode `test`: also what the test suite reads results with).
# Installing needs root; without it, the script only says what is missing.
set -euo pipefail
mode="${1:-demo}"

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have dockerd || need+=(docker.io)
have iptables || need+=(iptables)
have mmdebstrap || need+=(mmdebstrap)
have ip || need+=(iproute2)
have make || need+=(make)
if [ "$mode" = test ]; then
  have tshark || need+=(tshark)
  have curl || need+=(curl)
  have chromium || need+=(chromium)
  have python3 || need+=(python3)
  # The gRPC and HTTP/2 test servers run on Debian's own Python (/usr/bin/python3).
  for pkg in python3-grpcio python3-h2 python3-pip; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${need[*]}; run as root (or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# tests/k8s_manifest.rs checks `idagent k8s manifest` against the Kubernetes API schemas with
# kubernetes-validate (PyPI; Debian has no package), in Debian's Python like the test servers.
if [ "$mode" = test ] && ! /usr/bin/python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing kubernetes-validate; run as root (or: sudo /usr/bin/python3 -m pip install --break-system-packages kubernetes-validate==1.37.0)" >&2
    exit 1
  fi
  echo "setup: installing kubernetes-validate"
  /usr/bin/python3 -m pip install --quiet --root-user-action=ignore --break-system-packages \
    kubernetes-validate==1.37.0
fi

if ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: no Docker Engine answers and starting one needs root" >&2
    exit 1
  fi
  echo "setup: starting dockerd"
  setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start"; tail -20 /var/log/dockerd.log; exit 1; }
fi
