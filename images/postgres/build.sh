#!/usr/bin/env bash
# Build tether's offline Postgres 15 image without any registry:
#   debootstrap (minbase + postgresql-15, Debian bookworm, from the apt mirror
#   configured on this machine) -> docker import -> Dockerfile in this
#   directory for entrypoint/env/STOPSIGNAL.
#
# usage: images/postgres/build.sh IMAGE_NAME [LABEL_VALUE]
#   IMAGE_NAME   e.g. postgres:15 (tagged exactly so)
#   LABEL_VALUE  stored as label tether.context-hash (used by scripts/provision)
# env: DEBIAN_MIRROR overrides the mirror detected from /etc/apt/sources.list*.
# Needs root, debootstrap and a running docker engine. Takes ~1 minute.
set -euo pipefail

name="${1:?usage: build.sh IMAGE_NAME [LABEL_VALUE]}"
label="${2:-}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export DOCKER_BUILDKIT=0   # classic builder: FROM a local-only image, never pulls

say() { echo "postgres-image: $*" >&2; }

# First bookworm Debian mirror (not -security/-updates) in the apt sources.
detect_mirror() {
    local f
    # one-line format: deb [opts] URI bookworm component...
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        sed -E 's/#.*//; s/\[[^]]*\]//' "$f" | awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }'
    done
    # deb822 format
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

mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror="$(detect_mirror | head -n1 || true)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

work="$(mktemp -d /var/tmp/tether-pgimage.XXXXXX)"
root="$work/rootfs"
base="tether-postgres-rootfs:build-$$"
cleanup() {
    set +e
    # debootstrap mounts proc/sys inside the target; never rm through a mount
    awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r \
        | while read -r m; do umount -l "$m"; done
    rm -rf --one-file-system "$work"
    docker rmi "$base" >/dev/null 2>&1
}
trap cleanup EXIT

start=$SECONDS
old_id="$(docker image inspect -f '{{.Id}}' "$name" 2>/dev/null || :)"
say "debootstrap bookworm (minbase + postgresql-15) from $mirror"
if ! debootstrap --variant=minbase --include=postgresql-15 bookworm "$root" "$mirror" \
        >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
    say "debootstrap failed"
    exit 1
fi
say "debootstrap done in $((SECONDS - start)) s"

# Packaging leftovers: Debian's default cluster, caches, docs.
rm -rf "$root"/var/lib/postgresql/15 "$root"/etc/postgresql/15 \
       "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
       "$root"/usr/share/locale/* "$root"/var/cache/debconf/*-old \
       "$root"/var/log/*.log "$root"/debootstrap "$root"/tmp/* "$root"/var/tmp/*
# listen on all interfaces in new clusters (what the official image does)
sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" \
    "$root"/usr/share/postgresql/15/postgresql.conf.sample
grep -q "^listen_addresses = '\*'" "$root"/usr/share/postgresql/15/postgresql.conf.sample
# the image's resolv.conf/hosts/hostname come from docker at run time
: > "$root/etc/resolv.conf"
mkdir -p "$root/docker-entrypoint-initdb.d" "$root/var/lib/postgresql/data" "$root/var/run/postgresql"
chroot "$root" chown postgres:postgres /var/lib/postgresql/data /var/run/postgresql
chmod 0700 "$root/var/lib/postgresql/data"
chmod 3775 "$root/var/run/postgresql"
# installed here rather than COPYed, so a lost exec bit in the checkout is harmless
install -m 0755 "$here/docker-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"

say "importing rootfs"
tar --numeric-owner -C "$root" -c . | docker import - "$base" >/dev/null

say "building $name"
build_args=(--quiet --build-arg "BASE=$base" -t "$name")
[ -n "$label" ] && build_args+=(--label "tether.context-hash=$label")
if ! out="$(docker build "${build_args[@]}" "$here" 2>&1)"; then
    printf '%s\n' "$out" >&2
    say "docker build failed"
    exit 1
fi
# drop the image this one replaced, if nothing else uses it
if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$name")" ]; then
    docker rmi "$old_id" >/dev/null 2>&1 || :
fi
say "built $name in $((SECONDS - start)) s"
