#!/usr/bin/env bash
# The multi-VM lab from the host: what `make vm-up`, `make vm-test` and `make vm-down` run.
#   lab.sh up      libvirt running, box built (cached), `vagrant up` (timed)
#   lab.sh check   vagrant/check.sh against the running VMs
#   lab.sh test    up, check, then destroy (WEAVE_FDP_VM_KEEP=1 keeps the VMs)
#   lab.sh down    `vagrant destroy -f`, then the lab's libvirt networks, volumes and pool
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
pool=weave-fdp
pool_dir=/var/lib/libvirt/images/weave-fdp
log() { printf '[lab] %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

virsh_() { virsh -q -c qemu:///system "$@"; }

ensure_libvirt() {
  bash scripts/install-vm.sh
  if ! virsh_ pool-info "$pool" >/dev/null 2>&1; then
    mkdir -p "$pool_dir"
    virsh_ pool-define-as "$pool" dir --target "$pool_dir" >/dev/null
  fi
  virsh_ pool-info "$pool" | grep -q running || virsh_ pool-start "$pool" >/dev/null
}

up() {
  ensure_libvirt
  local t0=$SECONDS
  bash vagrant/box/build.sh
  log "box ready in $((SECONDS - t0)) s"
  t0=$SECONDS
  # every VM boots at once; provisioning runs in parallel (--parallel is vagrant-libvirt's default)
  # (the box upload's progress counter is one endless line: dropped)
  if ! vagrant up --provider=libvirt | sed -u -E 's/(Progress: [0-9]+%\x1b\[K)+//g'; then
    die "vagrant up failed (see the lines above: each names the VM and the step); clean up with: make vm-down"
  fi
  log "vagrant up (${WEAVE_FDP_VMS:-3} VMs) took $((SECONDS - t0)) s"
}

down() {
  if command -v vagrant >/dev/null; then
    vagrant destroy -f || true
  fi
  if command -v virsh >/dev/null && virsh_ version >/dev/null 2>&1; then
    # what vagrant-libvirt leaves behind: its networks and the box's base volume
    for net in weave-fdp-ul weave-fdp-mgmt; do
      virsh_ net-destroy "$net" >/dev/null 2>&1 || true
      virsh_ net-undefine "$net" >/dev/null 2>&1 || true
    done
    if virsh_ pool-info "$pool" >/dev/null 2>&1; then
      for vol in $(virsh_ vol-list "$pool" | awk '{print $1}'); do
        virsh_ vol-delete --pool "$pool" "$vol" >/dev/null || true
      done
      virsh_ pool-destroy "$pool" >/dev/null 2>&1 || true
      virsh_ pool-undefine "$pool" >/dev/null 2>&1 || true
    fi
  fi
  log "lab removed"
}

case "${1:-}" in
  up) up ;;
  check) bash vagrant/check.sh ;;
  test)
    t0=$SECONDS
    up
    rc=0
    bash vagrant/check.sh || rc=$?
    [ "${WEAVE_FDP_VM_KEEP:-0}" = 1 ] || down
    log "vm-test took $((SECONDS - t0)) s"
    exit $rc ;;
  down) down ;;
  *) die "usage: $0 up|check|test|down" ;;
esac
