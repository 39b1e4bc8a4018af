#!/usr/bin/env bash
# A second node on this machine: `skiff agent` in its own network
# namespace, joined to the `skiff server` running here. The conformance
# suite wants two untainted nodes; this gives them without a second
# machine (the multi-node end-to-end tests use the same layout).
#
#   scripts/second-node.sh up     # as root, with `skiff server --flannel-backend vxlan` running
#   scripts/second-node.sh down   # stops the agent, removes the namespace and links
#
# The namespace reaches the host through a veth into a bridge
# (SKIFF_NODE_BRIDGE, default skiffn0, 172.31.254.1/24 on the host side,
# the node at .2). Pods on the two nodes reach each other over the VXLAN
# overlay, so the server must run with `--flannel-backend vxlan` (the
# in-process node's address is not on the bridge, so host-gw routes
# cannot reach it). The second node has its own containerd: import images
# into it with `skiff images import FILE --data-dir $SKIFF_NODE_DIR`.
#
# Environment:
#   SKIFF          the skiff binary (default: target/release/skiff, then PATH)
#   SKIFF_DATA_DIR the server's data directory (default /var/lib/skiff)
#   SKIFF_PORT     the server's port (default 6443)
#   SKIFF_NODE     the node name (default: <hostname>-node2)
#   SKIFF_NODE_DIR the agent's data directory (default /var/lib/skiff-node2)
#   SKIFF_NODE_NET the /24 the bridge uses (default 172.31.254)
#   SKIFF_NODE_EXTRA extra `skiff agent` arguments (e.g. --cluster-cidr ...)
set -euo pipefail

cmd=${1:-}
net=${SKIFF_NODE_NET:-172.31.254}
bridge=${SKIFF_NODE_BRIDGE:-skiffn0}
ns=${SKIFF_NODE_NETNS:-skiff-node2}
veth=${ns:0:10}h
data_dir=${SKIFF_DATA_DIR:-/var/lib/skiff}
node_dir=${SKIFF_NODE_DIR:-/var/lib/skiff-node2}
node=${SKIFF_NODE:-$(hostname)-node2}
port=${SKIFF_PORT:-6443}
here=$(cd "$(dirname "$0")/.." && pwd)
skiff=${SKIFF:-}
if [ -z "$skiff" ]; then
  if [ -x "$here/target/release/skiff" ]; then skiff=$here/target/release/skiff; else skiff=$(command -v skiff || true); fi
fi

die() { echo "second-node: $*" >&2; exit 1; }

down() {
  if [ -f "$node_dir/agent.pid" ]; then
    pid=$(cat "$node_dir/agent.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$node_dir/agent.pid"
  fi
  # The agent's containers and containerd (started inside the namespace).
  if ip netns pids "$ns" >/dev/null 2>&1; then
    for p in $(ip netns pids "$ns"); do kill -9 "$p" 2>/dev/null || true; done
  fi
  ip netns del "$ns" 2>/dev/null || true
  ip link del "$veth" 2>/dev/null || true
  ip link del "$bridge" 2>/dev/null || true
}

up() {
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, containerd)"
  [ -n "$skiff" ] && [ -x "$skiff" ] || die "no skiff binary: build it (make build) or set SKIFF"
  [ -r "$data_dir/node-token" ] || die "no $data_dir/node-token: is skiff server running with --data-dir $data_dir?"
  ip netns list | grep -qw "$ns" && die "$ns exists: run '$0 down' first"
  echo 1 >/proc/sys/net/ipv4/ip_forward
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
    ip addr add "$net.1/24" dev "$bridge"
    ip link set "$bridge" up
  fi
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$bridge" up
  ip -n "$ns" addr add "$net.2/24" dev eth0
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$net.1"
  mkdir -p "$node_dir"
  # nsenter --net only: `ip netns exec` remounts /sys, hiding the cgroup
  # filesystem runc needs.
  nsenter --net="/var/run/netns/$ns" "$skiff" agent \
    --server "https://$net.1:$port" \
    --token "$(cat "$data_dir/node-token")" \
    --ca-file "$data_dir/tls/server-ca.crt" \
    --data-dir "$node_dir" \
    --node-name "$node" \
    --flannel-backend vxlan \
    --disable-ingress \
    ${SKIFF_NODE_EXTRA:-} \
    >"$node_dir/agent.log" 2>&1 &
  echo $! >"$node_dir/agent.pid"
  echo "second-node: node $node (pid $(cat "$node_dir/agent.pid"), log $node_dir/agent.log) joining https://$net.1:$port"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
