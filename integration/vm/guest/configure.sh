#!/usr/bin/env bash
# Configures a Debian 12 machine as clonebot's test guest. One script for both
# ways of getting that guest:
#   - the CI image: build-image.sh runs it in the debootstrap tree (chroot),
#     with --criu pointing at a copy of the host's CRIU 4.2.1;
#   - the Vagrant box: the Vagrantfile provisions with it (--go VERSION), and
#     `make deps` then builds CRIU there as on any host.
#
# Usage: configure.sh [--criu FILE] [--go VERSION] [--role ci|vagrant]
#
# Idempotent. What it does:
#   - apt accepts a dated archive snapshot (Acquire::Check-Valid-Until false);
#   - installs the packages listed in ./packages that are missing;
#   - keeps nginx's own service off (the tests start their own nginx);
#   - --criu FILE: installs FILE as /usr/local/sbin/criu and checks it runs
#     (its shared libraries are in ./packages);
#   - --go VERSION: installs that Go toolchain from go.dev in /usr/local/go,
#     linked from /usr/local/bin/go (Debian 12's golang is too old);
#   - writes /etc/clonebot-vm (the role) so tools know they run in the guest.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CRIU_FILE="" GO_VERSION="" ROLE=ci

usage() { echo "usage: $0 [--criu FILE] [--go VERSION] [--role ci|vagrant]" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--criu) CRIU_FILE=${2:?--criu needs a file}; shift 2 ;;
	--go) GO_VERSION=${2:?--go needs a version}; shift 2 ;;
	--role) ROLE=${2:?--role needs ci or vagrant}; shift 2 ;;
	*) usage ;;
	esac
done
case $ROLE in ci | vagrant) ;; *) usage ;; esac

say() { printf 'configure: %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "must run as root"; exit 1; }
export DEBIAN_FRONTEND=noninteractive

# A dated snapshot of the archive has expired Release files.
echo 'Acquire::Check-Valid-Until "false";' >/etc/apt/apt.conf.d/99clonebot-valid-until
# Keep images small: no recommends.
echo 'APT::Install-Recommends "false";' >/etc/apt/apt.conf.d/99clonebot-no-recommends

mapfile -t PKGS < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$HERE/packages")
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	say "installing ${missing[*]}"
	apt-get update -qq
	apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# nginx-light enables a system nginx on port 80; the tests run their own.
if [ -d /run/systemd/system ]; then
	systemctl disable --now nginx.service >/dev/null 2>&1 || true
else
	systemctl disable nginx.service >/dev/null 2>&1 || true
fi

if [ -n "$CRIU_FILE" ]; then
	install -D -m 0755 "$CRIU_FILE" /usr/local/sbin/criu
	v=$(/usr/local/sbin/criu --version 2>&1 | awk '/^Version:/ {print $2}') || true
	if [ -z "$v" ]; then
		say "/usr/local/sbin/criu does not run here (missing shared library?):"
		/usr/local/sbin/criu --version >&2 || true
		exit 1
	fi
	say "criu $v installed at /usr/local/sbin/criu"
fi

if [ -n "$GO_VERSION" ]; then
	if [ "$(/usr/local/go/bin/go env GOVERSION 2>/dev/null || true)" != "go$GO_VERSION" ]; then
		say "installing Go $GO_VERSION in /usr/local/go"
		tgz=$(mktemp)
		curl -fsSL -o "$tgz" "https://go.dev/dl/go${GO_VERSION}.linux-amd64.tar.gz"
		rm -rf /usr/local/go
		tar -C /usr/local -xzf "$tgz"
		rm -f "$tgz"
	fi
	ln -sf /usr/local/go/bin/go /usr/local/go/bin/gofmt /usr/local/bin/
fi

echo "$ROLE" >/etc/clonebot-vm
say "done ($ROLE)"
