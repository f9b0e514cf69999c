#!/usr/bin/env bash
# Builds the lab's Debian 12 libvirt box locally, with no box registry:
#   debootstrap (Debian's mirror) -> chroot: Debian's stock kernel, sshd, the
#   vagrant user with Vagrant's insecure key, every Debian package that
#   scripts/install.sh installs, and a wheelhouse of the project's Python
#   dependencies (pip in the box reads only it) -> mkfs.ext4 -d -> qemu-img qcow2.
# The kernel and initrd are also written beside the box: the VMs boot them
# directly (no boot loader, no partition table, no loop device needed).
# Cached: rebuilt only when the recipe (this file, the installer's package list,
# pyproject.toml) changes; the recipe's hash is stored in the box metadata.
#
#   vagrant/box/build.sh          build if needed, then `vagrant box add`
#   vagrant/box/build.sh --force  rebuild
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${WEAVE_FDP_BOX_DIR:-$here/out}
box_name=${WEAVE_FDP_BOX_NAME:-weave-fdp/debian12}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
disk_gb=8
log() { printf '[box] %s\n' "$*"; }
die() { printf '[box] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap and chroot); try: sudo $0"
for tool in debootstrap mkfs.ext4 qemu-img vagrant sha256sum; do
  command -v "$tool" >/dev/null || die "$tool not found; run: bash scripts/install-vm.sh"
done

# The installer's Debian package list is the one source of truth for what the box carries.
installer_packages() {
  sed -n '/^packages=(/,/^)/p' "$repo/scripts/install.sh" | sed '1d;$d' | sed 's/#.*//' | tr -s ' \n' ' '
}
# The project's Python dependencies as the installer installs them by default (runtime +
# the "test" extra), read from pyproject.toml.
python_requirements() {
  python3 - "$repo/pyproject.toml" <<'PY'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(p["dependencies"]) + list(p.get("optional-dependencies", {}).get("test", []))
print("\n".join(reqs))
PY
}
recipe=$( { cat "$0"; installer_packages; python_requirements; } | sha256sum | cut -d' ' -f1)
recipe=${recipe:0:16}

installed_recipe() {
  local meta
  meta=$(ls -d "$HOME"/.vagrant.d/boxes/"${box_name//\//-VAGRANTSLASH-}"/*/libvirt/metadata.json 2>/dev/null | head -n1)
  [ -n "$meta" ] && python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("recipe",""))' "$meta"
}

if [ "${1:-}" != "--force" ] && [ -f "$out/box-$recipe.box" ] && [ -f "$out/vmlinuz" ] \
   && [ "$(installed_recipe)" = "$recipe" ]; then
  log "box $box_name is up to date (recipe $recipe): nothing to do"
  exit 0
fi

# Add the built box to Vagrant, replacing the old one there and in libvirt's pool
# (vagrant-libvirt would otherwise keep cloning the old base volume). VM disks are
# snapshots of that volume: never replace it under them.
install_box() {
  if virsh -q -c qemu:///system vol-list weave-fdp 2>/dev/null | awk '{print $1}' | grep -qv "_vagrant_box_image_"; then
    die "VMs of the lab still exist (their disks are backed by the current box): run make vm-down, then $0 again"
  fi
  local vol
  for vol in $(virsh -q -c qemu:///system vol-list weave-fdp 2>/dev/null | awk '{print $1}' \
               | grep "^${box_name//\//-VAGRANTSLASH-}_vagrant_box_image" || true); do
    virsh -q -c qemu:///system vol-delete --pool weave-fdp "$vol" >/dev/null
  done
  vagrant box add --force --name "$box_name" "$out/box-$recipe.box" >/dev/null \
    || die "vagrant box add failed for $out/box-$recipe.box"
}

if [ "${1:-}" != "--force" ] && [ -f "$out/box-$recipe.box" ] && [ -f "$out/vmlinuz" ]; then
  log "box $box_name built already (recipe $recipe): adding it to Vagrant"
  install_box
  exit 0
fi

mkdir -p "$out"
work="$out/build"
root="$work/rootfs"
stage_tmp=
unmount_all() {
  local r=$1 m
  [ -n "$r" ] || return 0
  for m in dev/pts dev proc sys; do
    if mountpoint -q "$r/$m" 2>/dev/null; then umount -l "$r/$m"; fi
  done
  return 0
}
cleanup() {
  unmount_all "$root"
  if [ -n "$stage_tmp" ]; then unmount_all "$stage_tmp"; rm -rf "$stage_tmp"; fi
  rm -rf "$work"
}
trap cleanup EXIT
cleanup
start=$(date +%s)

base=(linux-image-amd64 systemd-sysv udev openssh-server sudo ifupdown isc-dhcp-client
      iproute2 rsync python3-pip less)
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 HOME=/root "$@"; }
mount_all() {
  mount -t proc proc "$1/proc"
  mount -t sysfs sys "$1/sys"
  mount --bind /dev "$1/dev"
  mount --bind /dev/pts "$1/dev/pts"
}

# Stage 1 (the slow part: debootstrap and the Debian packages) is kept on its own,
# keyed by the package lists, so a change elsewhere in the recipe reuses it.
stage_key=$(echo "$suite $mirror ${base[*]} $(installer_packages)" | sha256sum | cut -c1-16)
stage="$out/stage1-$stage_key"
if [ ! -f "$stage/.done" ]; then
  stage_tmp="$stage.tmp"
  root=$stage_tmp
  rm -rf "$root"
  # A previous stage (the package list changed): apt installs only what is new on top of it.
  previous=$(ls -d "$out"/stage1-*/.done 2>/dev/null | head -n1 || true)
  if [ -n "$previous" ]; then
    log "reusing $(dirname "$previous") for the changed package list"
    cp -a "$(dirname "$previous")" "$root"
    rm -f "$root/.done"
  else
    mkdir -p "$root"
    log "debootstrap $suite from $mirror"
    debootstrap --variant=minbase --include=ca-certificates,systemd-sysv \
      "$suite" "$root" "$mirror" >"$out/debootstrap.log" 2>&1 \
      || die "debootstrap failed (is $mirror reachable? set DEBIAN_MIRROR): see $out/debootstrap.log"
  fi
  mount_all "$root"
  printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$suite" "$mirror" "$suite" \
    >"$root/etc/apt/sources.list"
  # No daemon starts inside the chroot.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  echo "wireshark-common wireshark-common/install-setuid boolean false" | in_root debconf-set-selections
  log "installing the kernel, sshd and the installer's packages: $(installer_packages)"
  in_root apt-get update -qq >>"$out/debootstrap.log" 2>&1 \
    || die "apt-get update in the box failed: see $out/debootstrap.log"
  # shellcheck disable=SC2046
  in_root apt-get install -y -qq --no-install-recommends "${base[@]}" $(installer_packages) \
    >>"$out/debootstrap.log" 2>&1 || die "apt-get install in the box failed: see $out/debootstrap.log"
  rm -f "$root/usr/sbin/policy-rc.d"
  in_root apt-get clean
  rm -rf "$root/var/lib/apt/lists/"*
  unmount_all "$root"
  touch "$root/.done"
  for old in "$out"/stage1-*; do
    case "$old" in "$stage_tmp") ;; *) rm -rf "$old" ;; esac
  done
  mv "$stage_tmp" "$stage"
  stage_tmp=
  log "stage 1 (debootstrap + packages) took $(( $(date +%s) - start )) s"
fi
root="$work/rootfs"
mkdir -p "$work"
cp -a "$stage" "$root"
rm -f "$root/.done"
mount_all "$root"

log "downloading the Python wheelhouse"
# Downloaded by the host's pip (same Debian 12, Python 3.11, x86_64: the same wheels),
# so the host's pip configuration (proxy, certificates, mirrors) applies.
pip_py=python3
if [ -x "$repo/.venv/bin/python" ]; then pip_py="$repo/.venv/bin/python"; fi
mkdir -p "$root/opt/weave-fdp/wheelhouse"
{ python_requirements; echo "setuptools>=64"; echo "wheel"; } >"$root/opt/weave-fdp/requirements.txt"
"$pip_py" -m pip download -q --only-binary=:all: --python-version 3.11 \
  --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform linux_x86_64 \
  -d "$root/opt/weave-fdp/wheelhouse" -r "$root/opt/weave-fdp/requirements.txt" \
  >>"$out/debootstrap.log" 2>&1 || die "pip download failed (is PyPI reachable?): see $out/debootstrap.log"
# pip in the box installs from the wheelhouse only: provisioning needs no registry.
printf '[global]\nno-index = true\nfind-links = /opt/weave-fdp/wheelhouse\n' >"$root/etc/pip.conf"
# The installer's venv (/vagrant/.venv: rsync leaves it alone) with the dependencies already
# in it: under software emulation, creating a venv and installing a dozen wheels takes many
# minutes per VM. The installer still runs in full at provisioning and installs the project.
log "pre-seeding the installer's virtual environment with the dependencies"
in_root python3 -m venv --system-site-packages /vagrant/.venv >>"$out/debootstrap.log" 2>&1 \
  || die "python3 -m venv in the box failed: see $out/debootstrap.log"
in_root /vagrant/.venv/bin/python -m pip install -q -r /opt/weave-fdp/requirements.txt \
  >>"$out/debootstrap.log" 2>&1 || die "pip install in the box failed: see $out/debootstrap.log"

log "configuring users, network, ssh"
in_root useradd -m -s /bin/bash -G sudo vagrant
echo 'vagrant:vagrant' | in_root chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$root/etc/sudoers.d/vagrant"
chmod 440 "$root/etc/sudoers.d/vagrant"
pub=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -n1 || true)
[ -f "$pub" ] || die "Vagrant's insecure public key not found: apt-get install vagrant"
install -d -m 700 -o 1000 -g 1000 "$root/home/vagrant/.ssh"
install -m 600 -o 1000 -g 1000 "$pub" "$root/home/vagrant/.ssh/authorized_keys"
echo 'UseDNS no' >"$root/etc/ssh/sshd_config.d/vagrant.conf"
# Each VM gets its own host keys and machine id at first boot.
rm -f "$root"/etc/ssh/ssh_host_*
cat >"$root/etc/systemd/system/ssh-hostkeys.service" <<'EOF'
[Unit]
Description=Generate SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=multi-user.target
EOF
in_root systemctl enable ssh-hostkeys.service >/dev/null 2>&1
: >"$root/etc/machine-id"
echo "debian12" >"$root/etc/hostname"
echo "/dev/vda / ext4 defaults,noatime 0 1" >"$root/etc/fstab"
cat >"$root/etc/network/interfaces" <<'EOF'
auto lo
iface lo inet loopback
auto eth0
iface eth0 inet dhcp
EOF

log "making the disk image"
cp "$(readlink -f "$root/vmlinuz")" "$out/vmlinuz.new"
cp "$(readlink -f "$root/initrd.img")" "$out/initrd.img.new"
unmount_all "$root"
rm -f "$work/disk.raw"
mkfs.ext4 -q -F -L root -d "$root" "$work/disk.raw" "${disk_gb}G" || die "mkfs.ext4 -d failed"
qemu-img convert -O qcow2 "$work/disk.raw" "$work/box.img"
cat >"$work/metadata.json" <<EOF
{"provider": "libvirt", "format": "qcow2", "virtual_size": $disk_gb, "recipe": "$recipe"}
EOF
rm -f "$out"/box-*.box
tar -C "$work" -cf "$out/box-$recipe.box" metadata.json box.img
mv "$out/vmlinuz.new" "$out/vmlinuz"
mv "$out/initrd.img.new" "$out/initrd.img"
chmod 644 "$out/vmlinuz" "$out/initrd.img"

install_box
log "built $box_name (recipe $recipe) in $(( $(date +%s) - start )) s: $out/box-$recipe.box"
