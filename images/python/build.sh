#!/usr/bin/env bash
# Build a Python 3.11 base image for tether's Dockerfile without any registry:
#   debootstrap (minbase + python3 + python3-venv + haproxy for `tether proxy`, Debian bookworm, whose python3 is 3.11, from
#   the apt mirror configured on this machine) -> docker import.
# It stands in for python:3.11-slim-bookworm where nothing can be pulled:
#   docker build --build-arg BASE=IMAGE_NAME ...   (see README, "Running the stack with compose")
#
# usage: images/python/build.sh IMAGE_NAME [LABEL_VALUE]
#   IMAGE_NAME   e.g. tether-python:3.11 (tagged exactly so)
#   LABEL_VALUE  stored as label tether.context-hash (for scripts/provision, like images/postgres)
# env: DEBIAN_MIRROR overrides the mirror detected from /etc/apt/sources.list*.
# Needs root, debootstrap and a running docker engine. Takes about half a minute.
set -euo pipefail

name="${1:?usage: build.sh IMAGE_NAME [LABEL_VALUE]}"
label="${2:-}"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

say() { echo "python-image: $*" >&2; }

# First bookworm Debian mirror (not -security/-updates) in the apt sources (as images/postgres).
detect_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        sed -E 's/#.*//; s/\[[^]]*\]//' "$f" | awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }'
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
             {
                 uris = ""; suites = ""; types = ""; enabled = "yes"
                 for (i = 1; i <= NF; i++) {
                     if ($i ~ /^[Uu][Rr][Ii][Ss]:/)       { uris = $i; sub(/^[^:]*:[ \t]*/, "", uris) }
                     if ($i ~ /^[Ss]uites:/)              { suites = $i; sub(/^[^:]*:[ \t]*/, "", suites) }
                     if ($i ~ /^[Tt]ypes:/)               { types = $i; sub(/^[^:]*:[ \t]*/, "", types) }
                     if ($i ~ /^[Ee]nabled:/)             { enabled = $i; sub(/^[^:]*:[ \t]*/, "", enabled) }
                 }
                 if (enabled == "no" || (" " types " ") !~ / deb /) next
                 if ((" " suites " ") ~ / bookworm /) { split(uris, u, /[ \t]+/); print u[1]; exit }
             }' "$f"
    done
}

[ "$(id -u)" = 0 ] || { say "must run as root (debootstrap)"; exit 1; }
command -v debootstrap >/dev/null 2>&1 || { say "debootstrap is missing: apt-get install -y debootstrap"; exit 1; }

mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror="$(detect_mirror | head -n1 || true)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

work="$(mktemp -d /var/tmp/tether-pyimage.XXXXXX)"
root="$work/rootfs"
cleanup() {
    set +e
    # debootstrap mounts proc/sys inside the target; never rm through a mount
    awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r \
        | while read -r m; do umount -l "$m"; done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

start=$SECONDS
old_id="$(docker image inspect -f '{{.Id}}' "$name" 2>/dev/null || :)"
say "debootstrap bookworm (minbase + python3, python3-venv, haproxy) from $mirror"
if ! debootstrap --variant=minbase --include=python3,python3-venv,haproxy bookworm "$root" "$mirror" \
        >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
    say "debootstrap failed"
    exit 1
fi
say "debootstrap done in $((SECONDS - start)) s"
version="$(chroot "$root" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
case "$version" in
    3.11.*) ;;
    *) say "expected Python 3.11 from bookworm, got $version"; exit 1 ;;
esac

# Packaging leftovers: caches, docs, logs; resolv.conf/hosts/hostname come from docker at run time.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
       "$root"/usr/share/locale/* "$root"/var/cache/debconf/*-old \
       "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/debootstrap "$root"/tmp/* "$root"/var/tmp/*
find "$root"/usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} +
: > "$root/etc/resolv.conf"

say "importing rootfs as $name (Python $version)"
changes=(
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    --change 'ENV LANG=C.UTF-8'
    --change 'CMD ["python3"]'
)
[ -n "$label" ] && changes+=(--change "LABEL tether.context-hash=$label")
tar --numeric-owner -C "$root" -c . | docker import "${changes[@]}" - "$name" >/dev/null
# drop the image this one replaced, if nothing else uses it
if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$name")" ]; then
    docker rmi "$old_id" >/dev/null 2>&1 || :
fi
say "built $name in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$name" | awk '{ printf "%d MB", $1 / 1e6 }'))"
