#!/usr/bin/env bash
# Idempotent installer for the multi-VM lab (Vagrant + libvirt + QEMU) on Debian 12.
# Separate from scripts/install.sh so that `make test` never installs a hypervisor.
# Starts virtlogd and libvirtd itself when no init system does (containers, CI).
set -euo pipefail

log() { printf '[install-vm] %s\n' "$*"; }
die() { printf '[install-vm] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (libvirt's system instance and the box build need it); try: sudo $0"
command -v apt-get >/dev/null || die "apt-get not found: the VM lab installer supports Debian 12 only"

# vagrant + its libvirt provider, the hypervisor, the box build tools (debootstrap,
# mkfs.ext4 -d, qemu-img), dnsmasq for the management network's DHCP and the
# firewall tools libvirt's network driver calls.
packages=(
  vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
  debootstrap e2fsprogs dnsmasq-base iptables ebtables openssh-client rsync curl
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed: check that Debian's package mirror is reachable"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install failed for: ${missing[*]}"
fi

# libvirt's daemons: started here when no init system runs them.
if ! pgrep -x virtlogd >/dev/null; then
  log "starting virtlogd"
  virtlogd -d || die "virtlogd did not start: see /var/log/libvirt"
fi
if ! pgrep -x libvirtd >/dev/null; then
  log "starting libvirtd"
  libvirtd -d || die "libvirtd did not start: see /var/log/libvirt/libvirtd.log"
fi
for _ in $(seq 1 50); do
  virsh -c qemu:///system version >/dev/null 2>&1 && break
  sleep 0.2
done
virsh -c qemu:///system version >/dev/null 2>&1 \
  || die "libvirtd does not answer on qemu:///system: see /var/log/libvirt/libvirtd.log"
log "ready"
