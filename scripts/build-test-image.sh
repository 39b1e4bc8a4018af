#!/usr/bin/env bash
# Build a docker-archive image tarball (as `docker save` writes) from
# Debian's busybox-static, for tests: no registry is reachable, so tests
# import this with `ctr -n k8s.io images import` (or skiff's import).
#
# Usage: scripts/build-test-image.sh [OUT.tar] [TAG]
#   OUT.tar defaults to target/test-images/busybox-skiff.tar,
#   TAG defaults to busybox:skiff.
# Needs /bin/busybox (apt-get install busybox-static), tar and sha256sum.
set -euo pipefail

out="${1:-$(dirname "$0")/../target/test-images/busybox-skiff.tar}"
tag="${2:-busybox:skiff}"
busybox="${BUSYBOX:-/bin/busybox}"

if [ ! -x "$busybox" ]; then
  echo "build-test-image: $busybox is missing (apt-get install busybox-static)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The root filesystem: busybox and a link per applet, a few files a shell expects.
root="$work/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] && continue
  ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
printf '127.0.0.1 localhost\n' >"$root/etc/hosts"

# One layer; fixed owners and mtimes so that the digest is reproducible.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2024-01-01 00:00:00Z' \
  -C "$root" -cf "$work/layer.tar" .
layer_sha=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
mkdir -p "$work/image/$layer_sha"
mv "$work/layer.tar" "$work/image/$layer_sha/layer.tar"

cat >"$work/config.json" <<EOF
{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$layer_sha"]},"history":[{"created":"2024-01-01T00:00:00Z","created_by":"scripts/build-test-image.sh"}]}
EOF
config_sha=$(sha256sum "$work/config.json" | cut -d' ' -f1)
mv "$work/config.json" "$work/image/$config_sha.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' "$config_sha" "$tag" "$layer_sha" >"$work/image/manifest.json"
repo="${tag%:*}"
version="${tag##*:}"
printf '{"%s":{"%s":"%s"}}\n' "$repo" "$version" "$layer_sha" >"$work/image/repositories"

mkdir -p "$(dirname "$out")"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2024-01-01 00:00:00Z' \
  -C "$work/image" -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "$out"
