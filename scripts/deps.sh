#!/usr/bin/env bash
# Installs what clonebot needs on a Debian 12 machine, idempotently.
#   - CRIU >= 4.2: if criu is missing, older, or fails `criu check`, build 4.2.1
#     from Debian's source package and install it to /usr/local/sbin.
#   - the packages the tests and benchmarks use.
# Run as root. Safe to run again: it only installs what is missing.
set -euo pipefail

CRIU_MIN=${CRIU_MIN:-4.2}
CRIU_SRC_VERSION=${CRIU_SRC_VERSION:-4.2.1}
BUILD_DIR=${CLONEBOT_BUILD_DIR:-/var/cache/clonebot/build}

say() { printf 'deps: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
	say "must run as root (it installs packages and /usr/local/sbin/criu)"
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Runtime and test packages. procps/iproute2/util-linux: ps, ip, nsenter, unshare.
RUNTIME_PKGS=(iproute2 procps util-linux kmod ca-certificates)
TEST_PKGS=(python3 nginx-light curl hey wrk)
CRIU_BUILD_PKGS=(build-essential libbsd-dev libcap-dev libgnutls28-dev libnet1-dev
	libnftables-dev libnl-3-dev libprotobuf-c-dev libprotobuf-dev pkgconf
	protobuf-c-compiler protobuf-compiler python3-protobuf uuid-dev dpkg-dev xz-utils)

missing() {
	local p out=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
	done
	printf '%s\n' "${out[@]}"
}

apt_updated=0
apt_install() {
	local want
	mapfile -t want < <(missing "$@")
	[ "${#want[@]}" -eq 0 ] || [ -z "${want[0]}" ] && return 0
	if [ "$apt_updated" -eq 0 ]; then
		say "apt-get update"
		apt-get update -qq
		apt_updated=1
	fi
	say "installing ${want[*]}"
	apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
}

# version_ge A B: true when dotted version A >= B.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

criu_ok() {
	local bin v
	bin=$(command -v criu 2>/dev/null) || return 1
	v=$("$bin" --version 2>/dev/null | awk '/^Version:/ {print $2}')
	[ -n "$v" ] || return 1
	version_ge "$v" "$CRIU_MIN" || { say "$bin is $v, need >= $CRIU_MIN"; return 1; }
	"$bin" check >/dev/null 2>&1 || { say "$bin ($v) fails 'criu check'"; return 1; }
	say "criu $v at $bin: ok"
}

build_criu() {
	apt_install "${CRIU_BUILD_PKGS[@]}"
	local src=/etc/apt/sources.list.d/clonebot-unstable-src.sources
	if [ ! -f "$src" ]; then
		say "adding a deb-src entry for Debian unstable (source packages only)"
		cat >"$src" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: unstable
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
		# A dated archive snapshot has expired Release files.
		echo 'Acquire::Check-Valid-Until "false";' >/etc/apt/apt.conf.d/99clonebot-valid-until
		apt-get update -qq
		apt_updated=1
	fi
	mkdir -p "$BUILD_DIR"
	cd "$BUILD_DIR"
	local tarball="criu_${CRIU_SRC_VERSION}.orig.tar.xz"
	if [ ! -f "$tarball" ]; then
		say "downloading the criu source package"
		# The .debian.tar.xz may be missing from the archive; the orig tarball is enough.
		apt-get source --download-only -qq "criu=${CRIU_SRC_VERSION}-*" >/dev/null 2>&1 ||
			apt-get source --download-only -qq criu >/dev/null 2>&1 || true
		[ -f "$tarball" ] || { say "could not fetch $tarball from the Debian archive"; exit 1; }
	fi
	rm -rf "criu-${CRIU_SRC_VERSION}"
	tar -xf "$tarball"
	cd "criu-${CRIU_SRC_VERSION}"
	say "building criu ${CRIU_SRC_VERSION} (about 20 s on 2 cores)"
	make -j"$(nproc)" criu >build.log 2>&1 || { tail -n 30 build.log >&2; exit 1; }
	install -D -m 0755 criu/criu /usr/local/sbin/criu
	hash -r
	say "installed /usr/local/sbin/criu: $(/usr/local/sbin/criu --version | awk '/^Version:/ {print $2}')"
}

apt_install "${RUNTIME_PKGS[@]}" "${TEST_PKGS[@]}"
# nginx-light starts a system nginx on port 80 on install; the tests run their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q nginx 2>/dev/null; then
	systemctl disable --now nginx >/dev/null 2>&1 || true
fi

criu_ok || build_criu
criu_ok || { say "criu is still not usable after the build; see 'criu check'"; exit 1; }
