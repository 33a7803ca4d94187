#!/usr/bin/env bash
# The whole test suite against LibTorch 2.x: Debian 13's libtorch-dev (2.6) and python3-torch,
# in a Debian 13 root built with mmdebstrap, then snapshots carried across the two versions.
#
#   scripts/test-libtorch2.sh [ctest arguments, as scripts/test.sh takes them]
#
# 1. The root lives in a cache folder ($TTH_DEBIAN13_ROOT, default
#    ~/.cache/tth/debian13-root): reused when it is complete, built again when it is missing
#    or was left half made. It is built from the mirror this machine's apt uses (its Debian 13
#    suite), and scripts/install-deps.sh installs the packages there, as on any machine.
# 2. A copy of the sources (the files git tracks or would track) goes to /src in the root, and
#    the README's test command, scripts/test.sh, runs there (build folder and ccache kept in
#    the root between runs).
# 3. Snapshots written by this machine's build (LibTorch 1.13) are checked by the Debian 13
#    build, and the other way round (tests/cross_version.cpp, both savefuns).
# Needs root (chroot, mounts): runs apt-get and the rest as root, or through sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then exec sudo --preserve-env=TTH_DEBIAN13_ROOT,HOME "$0" "$@"; fi

root=${TTH_DEBIAN13_ROOT:-${HOME:-/root}/.cache/tth/debian13-root}
suite=trixie
ready=$root/.tth-root-ready # written last: a root without it is rebuilt
host_build=${BUILD_DIR:-build}

# The Debian mirror of this machine's apt sources (deb822 or one-line format).
host_mirror() {
  local uri
  uri=$(awk '/^URIs:/ { uri = $2 } /^Suites:/ && !/-security/ && uri { print uri; exit }' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [[ -n $uri ]] || uri=$(awk '$1 == "deb" && $3 !~ /-security/ { print $2; exit }' \
    /etc/apt/sources.list 2>/dev/null || true)
  [[ -n $uri ]] || { echo "test-libtorch2: no Debian mirror in /etc/apt sources" >&2; exit 1; }
  echo "$uri"
}

# Runs a command inside the root, with /proc, /dev and /sys mounted for it alone (a private
# mount namespace: the mounts end with the command, whatever happens to it).
in_root() {
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  unshare --mount --propagation private -- /bin/bash -c '
    set -e
    root=$1
    shift
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --rbind /sys "$root/sys"
    exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"' \
    in_root "$root" "$@"
}

make_root() {
  command -v mmdebstrap >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap
  }
  local mirror
  mirror=$(host_mirror)
  echo "test-libtorch2: building a Debian 13 root in $root"
  rm -rf "$root"
  mkdir -p "$(dirname "$root")"
  mmdebstrap --variant=apt --include=ca-certificates "$suite" "$root" \
    "deb $mirror $suite main"
  # The packages, by the same script as on any machine (a copy: the root has no sources yet).
  install -D scripts/install-deps.sh "$root/usr/local/sbin/tth-install-deps"
  in_root /usr/local/sbin/tth-install-deps
  touch "$ready"
}

[[ -f $ready ]] || make_root

# A fresh copy of the sources: what git tracks, and new files it does not ignore.
rm -rf "$root/src"
mkdir -p "$root/src"
git ls-files -z --cached --others --exclude-standard |
  tar --null --files-from=- -cf - | tar -xf - -C "$root/src"

in_root /bin/bash -c 'cd /src && BUILD_DIR=/var/tmp/tth-build scripts/test.sh "$@"' test "$@"

# Snapshots across the versions: 1.13 writes, 2.x checks; 2.x writes, 1.13 checks.
scripts/build.sh --target cross_version
exchange=$root/var/tmp/tth-cross-version
rm -rf "$exchange"
mkdir -p "$exchange/libtorch1" "$exchange/libtorch2"
"$host_build/tests/cross_version" write "$exchange/libtorch1"
in_root /var/tmp/tth-build/tests/cross_version check /var/tmp/tth-cross-version/libtorch1
in_root /var/tmp/tth-build/tests/cross_version write /var/tmp/tth-cross-version/libtorch2
"$host_build/tests/cross_version" check "$exchange/libtorch2"
echo "test-libtorch2: LibTorch $(in_root /var/tmp/tth-build/tests/cross_version version) passed," \
  "and snapshots load across it and LibTorch $("$host_build/tests/cross_version" version)"
