# shellcheck shell=bash
# Shared by integration/vm/run, build-image.sh and test-vm.sh (sourced).
#
# The image cache: $CLONEBOT_VM_CACHE (default /var/cache/clonebot/vm), one
# directory per image key. The key is a hash of everything that defines the
# image: build-image.sh, every file under guest/ and the CRIU binary copied in.
# It lives outside the repository so every clone of it on the machine shares
# the image; a change to any of those files builds a new one.

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_CACHE=${CLONEBOT_VM_CACHE:-/var/cache/clonebot/vm}
# The host CRIU the image gets a copy of (Debian 12's criu is too old).
VM_CRIU=${CLONEBOT_VM_CRIU:-/usr/local/sbin/criu}

vm_say() { printf 'vm: %s\n' "$*" >&2; }

# vm_image_key prints the cache key of the image the current files define.
vm_image_key() {
	local f
	{
		for f in "$VM_DIR/build-image.sh" $(find "$VM_DIR/guest" -type f | LC_ALL=C sort); do
			printf '%s\n' "${f#"$VM_DIR"/}"
			sha256sum <"$f"
		done
		printf 'criu\n'
		if [ -f "$VM_CRIU" ]; then sha256sum <"$VM_CRIU"; else echo missing; fi
	} | sha256sum | cut -c1-16
}

# vm_image_dir prints where the image of the current files is (or will be).
vm_image_dir() {
	if [ -n "${CLONEBOT_VM_IMAGE:-}" ]; then
		printf '%s\n' "$CLONEBOT_VM_IMAGE"
	else
		printf '%s/%s\n' "$VM_CACHE" "$(vm_image_key)"
	fi
}

# vm_image_ok DIR: DIR holds a complete image.
vm_image_ok() {
	[ -f "$1/complete" ] && [ -f "$1/vmlinuz" ] && [ -f "$1/initrd.img" ] && [ -f "$1/root.img" ]
}

# vm_need_host_pkgs CMD=PKG...: installs the Debian package of each missing
# command (a fresh CI machine has neither qemu nor debootstrap).
vm_need_host_pkgs() {
	local pair cmd pkg want=()
	for pair in "$@"; do
		cmd=${pair%%=*} pkg=${pair#*=}
		command -v "$cmd" >/dev/null 2>&1 || want+=("$pkg")
	done
	[ "${#want[@]}" -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		vm_say "missing ${want[*]}; run as root to install them (apt-get install ${want[*]})"
		return 1
	fi
	vm_say "installing ${want[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null 2>&1 || {
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
	}
}
