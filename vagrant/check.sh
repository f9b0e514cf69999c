#!/usr/bin/env bash
# Cross-VM checks of the running lab, from the host (make vm-test runs it after `vagrant up`):
#   1. `weave-fdp probe` on every VM (and this machine's, side by side)
#   2. every router connected to every other one (status connections)
#   3. ping matrix between all containers (c1 of each VM, 10.32.<i>.1)
#   4. an iperf3 figure per path (every pair of VMs)
#   5. `weave-fdp status` from each VM and `weave-fdp top --once` on vm1
#   6. (WEAVE_FDP_CHECK_MODES=1, the default) the data paths one after the other between
#      vm1 and vm2: fastdp, sleeve, encrypted fastdp (ESP), encrypted sleeve; iperf3 of
#      each in one run, ESP seen on the underlay and no plaintext UDP 6784, reset leaves
#      no xfrm state, a router without the password is refused.
# Exit 0 when every check passed; each failure is one line "FAIL: ...".
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
n=${WEAVE_FDP_VMS:-3}
net=${WEAVE_FDP_VM_NET:-192.168.57}
secs=${WEAVE_FDP_IPERF_SECONDS:-5}
out=${WEAVE_FDP_CHECK_OUT:-$repo/.vagrant/check}
mkdir -p "$out"
fails=0
fail() { printf 'FAIL: %s\n' "$*"; fails=$((fails + 1)); }
hdr() { printf '\n== %s\n' "$*"; }

# One ssh config for all: `vagrant ssh` costs seconds of Ruby per call.
cfg="$out/ssh-config"
vagrant ssh-config >"$cfg" 2>/dev/null || { echo "error: vagrant ssh-config failed: are the VMs up? (make vm-up)"; exit 1; }
on() {  # on VM COMMAND...: run as root in the VM
  local vm=$1; shift
  ssh -F "$cfg" -o LogLevel=ERROR -o ConnectTimeout=20 "$vm" "sudo bash -c $(printf '%q' "$*")"
}
vms=()
for i in $(seq 1 "$n"); do vms+=("vm$i"); done

# wait_for VM SECONDS COMMAND: until COMMAND succeeds in the VM
wait_for() {
  local vm=$1 t=$2; shift 2
  local end=$((SECONDS + t))
  while [ $SECONDS -lt $end ]; do
    on "$vm" "$*" >/dev/null 2>&1 && return 0
    sleep 3
  done
  return 1
}

# connected VM MODE: every other VM's connection is established in MODE
connected() {
  local vm=$1 mode=$2
  wait_for "$vm" 600 "[ \$(weave-fdp status connections | grep -c 'established $mode ') -ge $((n - 1)) ]"
}

iperf() {  # iperf FROM_VM TO_INDEX: Mbit/s received, container to container
  local from=$1 j=$2
  on "vm$j" "pkill -x iperf3 2>/dev/null; ip netns exec c1 iperf3 -s -D -1 >/dev/null" >/dev/null 2>&1
  sleep 1
  on "$from" "ip netns exec c1 iperf3 -c 10.32.$j.1 -t $secs -f m" 2>/dev/null \
    | awk '/receiver/ {print $(NF-2)}'
}

hdr "probe: this machine beside each VM (weave-fdp probe --json)"
.venv/bin/weave-fdp probe --json >"$out/probe-host.json" 2>/dev/null
for vm in "${vms[@]}"; do
  on "$vm" "weave-fdp probe --json" >"$out/probe-$vm.json" 2>/dev/null
  rc=$?
  [ $rc -eq 0 ] || fail "$vm: probe exit $rc (fastdp not available): see $out/probe-$vm.json"
done
python3 - "$out/probe-host.json" "${vms[@]/#/$out/probe-}" <<'PY'
import json, sys
cols = [("host", sys.argv[1])] + [(p.rsplit("probe-", 1)[1], p + ".json") for p in sys.argv[2:]]
data = {}
for name, path in cols:
    try:
        data[name] = json.load(open(path))
    except (OSError, ValueError):
        data[name] = {"checks": [], "verdict": "no answer"}
order = [c["name"] for c in data["host"].get("checks", [])]
for d in data.values():
    order += [c["name"] for c in d.get("checks", []) if c["name"] not in order]
cell = lambda d, n: next(((c["result"] + (": " + c["detail"] if c["name"] in ("kernel version", "ESP/XFRM crypto") else ""))[:34]
                          for c in d.get("checks", []) if c["name"] == n), "-")
print(f"{'check':<28}" + "".join(f"{name:<36}" for name, _ in cols))
for n in order:
    print(f"{n[:27]:<28}" + "".join(f"{cell(data[name], n):<36}" for name, _ in cols))
print(f"{'verdict':<28}" + "".join(f"{str(data[name].get('verdict'))[:34]:<36}" for name, _ in cols))
PY

hdr "connections (waiting until each VM has $((n - 1)) established fastdp)"
for vm in "${vms[@]}"; do
  connected "$vm" fastdp || fail "$vm: not every connection is established fastdp"
  echo "$vm:"; on "$vm" "weave-fdp status connections" | sed 's/^/  /'
done

hdr "ping matrix (row: from vmI's c1, column: to vmJ's c1 10.32.J.1)"
printf '%8s' ""; for j in $(seq 1 "$n"); do printf '%8s' "vm$j"; done; echo
for i in $(seq 1 "$n"); do
  printf '%8s' "vm$i"
  for j in $(seq 1 "$n"); do
    if on "vm$i" "ip netns exec c1 ping -c 3 -i 0.3 -W 5 -q 10.32.$j.1" >"$out/ping-$i-$j.txt" 2>&1; then
      printf '%8s' "$(awk -F/ '/rtt/ {printf "%.1fms", $5}' "$out/ping-$i-$j.txt")"
    else
      printf '%8s' "FAIL"; fail "ping vm$i c1 -> vm$j c1 (10.32.$j.1)"
    fi
  done
  echo
done

hdr "iperf3 per path (container to container, $secs s, Mbit/s)"
for i in $(seq 1 "$n"); do
  for j in $(seq $((i + 1)) "$n"); do
    r=$(iperf "vm$i" "$j")
    [ -n "$r" ] || fail "iperf3 vm$i -> vm$j"
    printf 'vm%s -> vm%s  %s\n' "$i" "$j" "${r:-FAIL}"
  done
done

hdr "status of each VM"
for vm in "${vms[@]}"; do echo "$vm:"; on "$vm" "weave-fdp status" | sed 's/^/  /'; done
hdr "weave-fdp top --once on vm1"
on vm1 "weave-fdp top --once" || fail "vm1: top --once"

if [ "${WEAVE_FDP_CHECK_MODES:-1}" = 1 ]; then
  bash "$repo/vagrant/check-modes.sh" "$cfg" "$out" || fails=$((fails + $?))
fi

echo
if [ $fails -eq 0 ]; then echo "vm-test: all checks passed"; else echo "vm-test: $fails check(s) failed"; fi
[ $fails -eq 0 ]
