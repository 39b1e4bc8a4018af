#!/usr/bin/env bash
# Install the system packages skiff builds and runs with, when missing.
# Needs root to install; without root it only reports what is missing.
set -euo pipefail

# command -> Debian package
declare -A needs=(
  [cc]=gcc
  [make]=make
  [sqlite3]=sqlite3
  [protoc]=protobuf-compiler
  [containerd]=containerd
  [runc]=runc
  [busybox]=busybox-static
  [iptables]=iptables
  [nft]=nftables
  [etcd]=etcd-server
)
missing=()
for cmd in "${!needs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${needs[$cmd]}")
done
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
if ! command -v kubectl >/dev/null 2>&1; then
  echo "setup: kubectl is not on the PATH; the end-to-end tests and 'skiff kubectl' need it" >&2
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing packages (run as root to install): ${missing[*]}" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q "${missing[@]}"
