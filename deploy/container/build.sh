#!/usr/bin/env bash
# Builds the fjord container image without pulling any base image.
#
#   deploy/container/build.sh [--rootfs-only]
#
# 1. Assembles a root file system in target/container/rootfs: the release `fjord` binary
#    (stripped), exactly the shared libraries `ldd` says it links, copied from this machine's
#    Debian packages (each listed with its package and version in
#    /usr/share/doc/fjord-image/packages.txt, next to the packages' copyright files), and
#    /etc/passwd, /etc/group (user fjord, uid 10001), /etc/nsswitch.conf.
# 2. As root, checks that root file system alone runs the binary: `chroot ROOTFS fjord
#    --version` and `fjord serve --help` (no library from the host leaks in).
# 3. Unless --rootfs-only: `podman build` (or `docker build`) of deploy/container/Containerfile,
#    FROM scratch, with that context. Nothing is pulled.
#
# Environment: FJORD_BIN (default target/release/fjord: build it first with
# `cargo build --release -p fjord-cli --locked`), FJORD_IMAGE (default localhost/fjord:dev),
# CONTAINER_TOOL (default podman, else docker).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${FJORD_BIN:-$repo/target/release/fjord}
image=${FJORD_IMAGE:-localhost/fjord:dev}
ctx=$repo/target/container
root=$ctx/rootfs
uid=10001

rootfs_only=0
case "${1:-}" in
  --rootfs-only) rootfs_only=1 ;;
  "") ;;
  *) echo "usage: $0 [--rootfs-only]" >&2; exit 2 ;;
esac

[ -x "$bin" ] || {
  echo "no fjord binary at $bin: run cargo build --release -p fjord-cli --locked, or set FJORD_BIN" >&2
  exit 1
}

rm -rf "$ctx"
install -d "$root/usr/local/bin" "$root/etc" "$root/usr/share/doc/fjord-image" "$ctx/data"
install -d -m 1777 "$root/tmp"
strip -o "$root/usr/local/bin/fjord" "$bin" 2>/dev/null || cp "$bin" "$root/usr/local/bin/fjord"
chmod 0755 "$root/usr/local/bin/fjord"

# The libraries the binary links, at the paths the loader looks for them (the program
# interpreter /lib64/ld-linux-x86-64.so.2 included), each from the Debian package that has it.
libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
[ -n "$libs" ] || { echo "ldd found no libraries for $bin" >&2; exit 1; }
manifest=$root/usr/share/doc/fjord-image/packages.txt
: > "$manifest"
for lib in $libs; do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  pkg=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null || true)
  pkg=${pkg%%:*}
  if [ -n "$pkg" ]; then
    version=$(dpkg-query -W -f='${Version}' "$pkg")
    echo "$lib $pkg $version" >> "$manifest"
    name=${pkg%%:*}
    if [ -f "/usr/share/doc/$name/copyright" ]; then
      install -D -m 0644 "/usr/share/doc/$name/copyright" "$root/usr/share/doc/$name/copyright"
    fi
  else
    echo "$lib (no Debian package owns it)" >> "$manifest"
  fi
done

cat > "$root/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/sbin/nologin
fjord:x:$uid:$uid:fjord:/var/lib/fjord:/sbin/nologin
PASSWD
cat > "$root/etc/group" <<GROUP
root:x:0:
fjord:x:$uid:
GROUP
# glibc (2.34 and later) carries the files and dns lookups itself: no libnss_* needed.
cat > "$root/etc/nsswitch.conf" <<NSS
passwd: files
group: files
hosts: files dns
NSS
# Containers mount their own /etc/hosts and /etc/resolv.conf; these stand in under chroot.
printf '127.0.0.1 localhost\n::1 localhost\n' > "$root/etc/hosts"
: > "$root/etc/resolv.conf"

echo "root file system in $root:"
( cd "$root" && find . -type f | sort | sed 's/^\./  /' )
sed 's/^/  package: /' "$manifest"

if [ "$(id -u)" = 0 ] && command -v chroot >/dev/null; then
  chroot --userspec=$uid:$uid "$root" /usr/local/bin/fjord --version
  chroot --userspec=$uid:$uid "$root" /usr/local/bin/fjord serve --help > "$ctx/serve-help.txt"
  echo "chroot check: fjord --version and fjord serve --help ran from the root file system alone"
else
  echo "chroot check skipped (needs root)"
fi

[ "$rootfs_only" = 1 ] && exit 0

tool=${CONTAINER_TOOL:-}
if [ -z "$tool" ]; then
  if command -v podman >/dev/null; then tool=podman; else tool=docker; fi
fi
pull=()
[ "$tool" = podman ] && pull=(--pull=never)   # FROM scratch needs nothing; say so anyway
"$tool" build "${pull[@]}" -f "$here/Containerfile" -t "$image" "$ctx"
"$tool" image inspect "$image" --format '{{.Id}} {{.Size}} bytes' | sed "s|^|built $image: |"
