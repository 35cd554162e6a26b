#!/usr/bin/env bash
# Builds clonebot's test guest image once and caches it; prints its directory.
#
# Usage (as root): integration/vm/build-image.sh [--force]
#
# The image: Debian 12 (debootstrap --variant=minbase) with the packages in
# guest/packages, configured by guest/configure.sh (the script the Vagrant box
# is provisioned with) plus the CI pieces below: the host's CRIU (4.2.1, built
# by `make deps`; Debian 12's criu 3.17 is too old), a fast init, the unit that
# runs a command under systemd, and a small initrd of its own (busybox).
# Output, in $CLONEBOT_VM_CACHE/<key>/ (default /var/cache/clonebot/vm/<key>):
#   vmlinuz and vmlinux (the same kernel uncompressed), initrd.img, root.img (ext4, no partition table; booted with
#   snapshot=on so every run starts from it unchanged), manifest.txt, complete.
# <key> hashes this file, guest/* and the CRIU binary (common.sh): the same
# files reuse the cached image, a change builds a new one. The 3 newest
# images are kept. The debootstrap tree is cached apart as base-<key>.tar
# (keyed on guest/packages, suite and mirror), and downloaded packages in debs/.
#
# Environment: CLONEBOT_VM_CACHE, CLONEBOT_VM_CRIU (default
# /usr/local/sbin/criu), CLONEBOT_VM_MIRROR (default http://deb.debian.org/debian),
# CLONEBOT_VM_SUITE (bookworm), CLONEBOT_VM_DISK (3G).
# Needs debootstrap and e2fsprogs (installed when missing) and network access
# to the Debian archive; about 3-5 minutes.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"

FORCE=0
case ${1:-} in
--force) FORCE=1 ;;
"") ;;
*) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

MIRROR=${CLONEBOT_VM_MIRROR:-http://deb.debian.org/debian}
SUITE=${CLONEBOT_VM_SUITE:-bookworm}
DISK=${CLONEBOT_VM_DISK:-3G}

if [ -n "${CLONEBOT_VM_IMAGE:-}" ]; then
	vm_image_ok "$CLONEBOT_VM_IMAGE" || { vm_say "CLONEBOT_VM_IMAGE=$CLONEBOT_VM_IMAGE is not a complete image"; exit 1; }
	echo "$CLONEBOT_VM_IMAGE"
	exit 0
fi

key=$(vm_image_key)
out=$VM_CACHE/$key
if [ "$FORCE" -eq 0 ] && vm_image_ok "$out"; then
	echo "$out"
	exit 0
fi

[ "$(id -u)" -eq 0 ] || { vm_say "building the image needs root (debootstrap, chroot)"; exit 1; }
if [ ! -x "$VM_CRIU" ]; then
	vm_say "no CRIU at $VM_CRIU to copy into the image: run 'make deps' first (or set CLONEBOT_VM_CRIU)"
	exit 1
fi
criu_v=$("$VM_CRIU" --version 2>/dev/null | awk '/^Version:/ {print $2}')
case $criu_v in
4.[2-9]* | 4.[1-9][0-9]* | [5-9].*) ;;
*) vm_say "$VM_CRIU is version '${criu_v:-unknown}'; the guest needs >= 4.2 ('make deps' builds it)"; exit 1 ;;
esac
vm_need_host_pkgs debootstrap=debootstrap mkfs.ext4=e2fsprogs

mkdir -p "$VM_CACHE"
exec 9>"$VM_CACHE/.lock"
if ! flock -n 9; then
	vm_say "another build holds $VM_CACHE/.lock; waiting"
	flock 9
fi
if [ "$FORCE" -eq 0 ] && vm_image_ok "$out"; then # built while we waited
	echo "$out"
	exit 0
fi

work=$VM_CACHE/.build-$key.$$
root=$work/rootfs
cleanup() {
	local m
	for m in dev/pts dev sys proc; do
		mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"
	done
	rm -rf --one-file-system "$work"
}
trap cleanup EXIT
mkdir -p "$work" "$VM_CACHE/debs"
t0=$(date +%s)

# Stage 1, cached apart (keyed on the package list, suite and mirror only):
# the debootstrap tree, as a tarball. Changing anything else in the image
# then takes seconds instead of minutes.
mapfile -t pkgs < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$VM_DIR/guest/packages")
base_key=$(printf '%s\n' "base-v1" "$SUITE" "$MIRROR" "${pkgs[@]}" | sha256sum | cut -c1-16)
base=$VM_CACHE/base-$base_key.tar
if [ ! -f "$base" ]; then
	include=$(IFS=,; echo "${pkgs[*]}")
	vm_say "debootstrap $SUITE from $MIRROR into $root (a few minutes)"
	if ! debootstrap --variant=minbase --include="$include" --cache-dir="$VM_CACHE/debs" \
		"$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
		tail -n 30 "$work/debootstrap.log" >&2
		[ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
		vm_say "debootstrap failed"
		exit 1
	fi
	tar -C "$root" --numeric-owner --xattrs -cf "$base.tmp" .
	mv "$base.tmp" "$base"
	# Keep the 2 newest base trees.
	find "$VM_CACHE" -maxdepth 1 -name 'base-*.tar' -printf '%T@ %p\n' | sort -rn | tail -n +3 |
		cut -d' ' -f2- | xargs -r rm -f
else
	vm_say "reusing the debootstrap tree $base"
	mkdir -p "$root"
	tar -C "$root" --numeric-owner --xattrs -xf "$base"
fi
t1=$(date +%s)

mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"

# The shared configuration (also the Vagrant box's provisioning).
mkdir -p "$root/tmp/clonebot-guest"
cp -a "$VM_DIR/guest/." "$root/tmp/clonebot-guest/"
cp "$VM_CRIU" "$root/tmp/clonebot-guest/criu"
chroot "$root" /tmp/clonebot-guest/configure.sh --criu /tmp/clonebot-guest/criu --role ci

# CI-only pieces: the fast init, the systemd runner unit, identity, initrd.
install -m 0755 "$VM_DIR/guest/init" "$root/sbin/clonebot-vm-init"
install -m 0755 "$VM_DIR/guest/vm-run" "$root/usr/local/sbin/clonebot-vm-run"
install -m 0644 "$VM_DIR/guest/clonebot-vm-run.service" "$root/etc/systemd/system/clonebot-vm-run.service"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf ../clonebot-vm-run.service "$root/etc/systemd/system/multi-user.target.wants/clonebot-vm-run.service"
# Units a throwaway test guest does not need and that slow a systemd boot
# under TCG (e2scrub_reap alone takes ~9 s).
for u in e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer \
	dpkg-db-backup.timer fstrim.timer getty@tty1.service; do
	ln -sf /dev/null "$root/etc/systemd/system/$u"
done
echo clonebot-vm >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tclonebot-vm\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
echo '/dev/vda / ext4 rw,relatime 0 0' >"$root/etc/fstab"
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$root/etc/machine-id"
echo >>"$root/etc/machine-id"
chroot "$root" passwd -d root >/dev/null # root logs in on ttyS0 without a password (systemd boots)
# The initrd: busybox and the modules mounting /dev/vda needs, with a tiny
# /init (guest/initrd-init). initramfs-tools' own, even with MODULES=list,
# spends about 10 s per boot under TCG starting udev and probing; this one
# about 1 s. (All modules stay on the root file system: CRIU needs the
# *_diag ones, loaded on demand; 9p is loaded by clonebot-vm-run.)
kver=$(basename "$(readlink -f "$root/vmlinuz")")
kver=${kver#vmlinuz-}
ird=$root/tmp/clonebot-initrd
mkdir -p "$ird/bin" "$ird/dev" "$ird/proc" "$ird/newroot" "$ird/lib/modules"
cp "$root/bin/busybox" "$ird/bin/busybox"
install -m 0755 "$VM_DIR/guest/initrd-init" "$ird/init"
chroot "$root" modprobe -a --show-depends --set-version "$kver" virtio_pci virtio_blk crc32c_generic ext4 |
	awk '$1 == "insmod" { print $2 }' | awk '!seen[$0]++' >"$work/modules.list"
[ -s "$work/modules.list" ] || { vm_say "modprobe --show-depends listed no modules for $kver"; exit 1; }
while read -r ko; do
	cp "$root$ko" "$ird/lib/modules/"
	basename "$ko" >>"$ird/modules.order"
done <"$work/modules.list"
chroot "$root" sh -c 'cd /tmp/clonebot-initrd && find . | cpio --quiet -o -H newc' | gzip -1 >"$work/initrd.img"
rm -rf "$ird" "$root"/boot/initrd.img-*

{
	echo "key: $key"
	echo "built: $(date -u +%FT%TZ) on $(hostname)"
	echo "suite: $SUITE from $MIRROR"
	echo "kernel: $(basename "$(readlink -f "$root/vmlinuz")")"
	echo "criu: $criu_v (copy of $VM_CRIU)"
	echo "packages:"
	# shellcheck disable=SC2016 # dpkg-query's format, not shell
	chroot "$root" dpkg-query -W -f='  ${Package} ${Version}\n'
} >"$work/manifest.txt"

for m in dev/pts dev sys proc; do umount "$root/$m"; done
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root/tmp/clonebot-guest" \
	"$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
cp "$(readlink -f "$root/vmlinuz")" "$work/vmlinuz"
# The uncompressed kernel (ELF): qemu boots it through its PVH entry point,
# skipping the firmware and the decompression (xz), which take about 7 s per
# boot under TCG. Debian's kernels have CONFIG_PVH.
chroot "$root" python3 -c '
import lzma, sys
d = open(sys.argv[1], "rb").read()
i = d.find(b"\xfd7zXZ\x00")
if i < 0:
    sys.exit("no xz stream in " + sys.argv[1])
out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d[i:])
if out[:4] != b"\x7fELF":
    sys.exit("the xz stream of " + sys.argv[1] + " is not an ELF kernel")
sys.stdout.buffer.write(out)
' "/boot/vmlinuz-$kver" >"$work/vmlinux" || {
	vm_say "could not extract vmlinux; booting the compressed kernel"
	rm -f "$work/vmlinux"
}
mkfs.ext4 -q -F -L clonebot-vm -E root_owner=0:0 -d "$root" "$work/root.img" "$DISK"
rm -rf --one-file-system "$root"
touch "$work/complete"
rm -rf "$out"
mv "$work" "$out"
t2=$(date +%s)
vm_say "image $out built: base tree $((t1 - t0))s, configure+initrd+mkfs $((t2 - t1))s"

# Keep the 3 newest images.
find "$VM_CACHE" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9a-f]+$' -printf '%T@ %p\n' |
	sort -rn | tail -n +4 | cut -d' ' -f2- | while read -r old; do
	vm_say "removing old image $old"
	rm -rf --one-file-system "$old"
done
echo "$out"
