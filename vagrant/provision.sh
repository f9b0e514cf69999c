#!/usr/bin/env bash
# Provisions one lab VM (run by Vagrant as root inside the VM):
#   install  the README's installer, scripts/install.sh (pip reads the box's wheelhouse)
#   launch   this VM's router, joining the other VMs (with --password when set)
#   attach   one test container: network namespace c1 with 10.32.<i>.1/12
# Usage: provision.sh VM_NAME INDEX UNDERLAY_IP PEER_IP,PEER_IP...
# Any failing step prints one line naming the VM and the step, and exits 1.
set -uo pipefail

vm=$1 index=$2 ip=$3 peers=${4:-}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# software emulation: a router may need longer than the default to answer at launch
export WEAVE_FDP_LAUNCH_TIMEOUT=${WEAVE_FDP_LAUNCH_TIMEOUT:-1200}
log="/var/log/weave-fdp-provision.log"

step() {
  local name=$1; shift
  local t0=$SECONDS
  printf '[%s] %s ...\n' "$vm" "$name"
  if ! "$@" >>"$log" 2>&1; then
    printf 'error: %s: provisioning step "%s" failed; see %s in the VM (vagrant ssh %s -c "sudo tail -n 40 %s")\n' \
      "$vm" "$name" "$log" "$vm" "$log" >&2
    tail -n 5 "$log" >&2
    exit 1
  fi
  printf '[%s] %s done in %d s\n' "$vm" "$name" $((SECONDS - t0))
}

underlay_up() {
  # Vagrant configured the private network; the router needs the address in place.
  for _ in $(seq 1 60); do
    ip -4 -o addr show | grep -q " $ip/" && return 0
    sleep 1
  done
  echo "no interface has $ip"
  return 1
}

launch() {
  weave-fdp stop >/dev/null 2>&1 || true
  local args=()
  [ -n "${WEAVE_FDP_PASSWORD:-}" ] && args+=(--password "$WEAVE_FDP_PASSWORD")
  # shellcheck disable=SC2086
  weave-fdp launch "${args[@]}" ${peers//,/ }
}

attach() {
  ip netns list | grep -qw c1 || ip netns add c1
  if weave-fdp ps 2>/dev/null | grep -q "10.32.$index.1/"; then
    return 0
  fi
  weave-fdp attach "10.32.$index.1/12" netns:c1
}

: >"$log"
step "underlay address $ip" underlay_up
step "install (scripts/install.sh)" bash /vagrant/scripts/install.sh
step "launch router (peers: ${peers:-none})" launch
step "attach container c1 10.32.$index.1/12" attach
echo "[$vm] ready: router $(weave-fdp report -f '{router[name]}' 2>/dev/null), container c1 10.32.$index.1/12"
