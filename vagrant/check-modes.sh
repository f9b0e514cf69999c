#!/usr/bin/env bash
# The data paths between vm1 and vm2, one after the other, in one run (called by check.sh):
#   fastdp, sleeve (--no-fastdp), encrypted fastdp (--password: IPsec ESP), encrypted sleeve
#   (--password --no-fastdp); an iperf3 figure of each and its ratio to fastdp.
# With --password it also checks: `status connections` says "encrypted fastdp", tshark on the
# underlay sees ESP (IP protocol 50) and no plaintext UDP 6784, a router without the password
# is refused, and `reset` leaves no xfrm state or policy of ours.
# Usage: check-modes.sh SSH_CONFIG OUT_DIR   (exit status: number of failed checks)
set -uo pipefail

cfg=$1 out=$2
n=${WEAVE_FDP_VMS:-3}
secs=${WEAVE_FDP_IPERF_SECONDS:-5}
net=${WEAVE_FDP_VM_NET:-192.168.57}
pw=lab-secret
fails=0
fail() { printf 'FAIL: %s\n' "$*"; fails=$((fails + 1)); }
on() { local vm=$1; shift; ssh -F "$cfg" -o LogLevel=ERROR -o ConnectTimeout=20 "$vm" "sudo bash -c $(printf '%q' "$*")"; }
ip_of() { echo "$net.$((10 + $1))"; }

# relaunch I FLAGS...: reset vmI's router and launch it with FLAGS, joined to vm1/vm2, container back
relaunch() {
  local i=$1; shift
  local other=$((3 - i))
  on "vm$i" "weave-fdp reset >/dev/null 2>&1; ip netns del c1 2>/dev/null; ip netns add c1;
             WEAVE_FDP_LAUNCH_TIMEOUT=1200 weave-fdp launch $* $(ip_of $other) >/dev/null &&
             weave-fdp attach 10.32.$i.1/12 netns:c1 >/dev/null" \
    || { fail "vm$i: launch $*"; return 1; }
}

# wait_conn I WORDS SECONDS: vmI's connection to the other VM is "established WORDS"
wait_conn() {
  local i=$1 words=$2 t=$3 end=$((SECONDS + $3))
  while [ $SECONDS -lt $end ]; do
    on "vm$i" "weave-fdp status connections" 2>/dev/null | grep -q "established $words " && return 0
    sleep 3
  done
  fail "vm$i: no connection 'established $words' within ${t}s: $(on "vm$i" 'weave-fdp status connections' 2>&1 | tr '\n' ' ')"
  return 1
}

ours() {  # ours I: how many xfrm states and policies of ours vmI holds
  on "vm$1" "{ ip xfrm state list reqid 22525 | grep '^src'; ip xfrm policy list | grep 'dport 6784'; } | wc -l"
}

iperf() {
  on vm2 "pkill -x iperf3 2>/dev/null; ip netns exec c1 iperf3 -s -D -1 >/dev/null" >/dev/null 2>&1
  sleep 1
  on vm1 "ip netns exec c1 iperf3 -c 10.32.2.1 -t $secs -f m" 2>/dev/null | awk '/receiver/ {print $(NF-2)}'
}

# Only vm1 and vm2 take part; the others stop so they do not dial in with other settings
# (and vm1/vm2 forget them: no grace period toward a peer that is gone).
for i in $(seq 3 "$n"); do on "vm$i" "weave-fdp reset >/dev/null 2>&1" || true; done

declare -A mbps
# fastdp first with the routers as provisioned (a fastdp launch compiles the BPF programs:
# minutes under software emulation), encrypted fastdp last (its checks end with stop/reset)
modes=("fastdp|fastdp|keep" "sleeve|sleeve|--no-fastdp" "encrypted sleeve|encrypted sleeve|--password $pw --no-fastdp"
       "encrypted fastdp|encrypted fastdp|--password $pw")
printf '\n== data paths vm1 -> vm2 (one run, iperf3 %s s, container to container)\n' "$secs"
for m in "${modes[@]}"; do
  IFS='|' read -r label words flags <<<"$m"
  if [ "$flags" != keep ]; then
    # both at once: a fastdp launch compiles the BPF programs (minutes under emulation)
    relaunch 1 $flags & p1=$!
    relaunch 2 $flags & p2=$!
    ok1=0 ok2=0
    wait $p1 || ok1=1
    wait $p2 || ok2=1
    [ $ok1 -eq 0 ] || fail "$label: relaunch vm1"
    [ $ok2 -eq 0 ] || fail "$label: relaunch vm2"
    [ $ok1 -eq 0 ] && [ $ok2 -eq 0 ] || continue
  fi
  wait_conn 1 "$words" 600 && wait_conn 2 "$words" 120 || continue
  on vm1 "ip netns exec c1 ping -c 3 -W 5 -q 10.32.2.1" >/dev/null 2>&1 || fail "$label: ping vm1 c1 -> vm2 c1"
  if [ "$label" = "encrypted fastdp" ]; then
    # the underlay while traffic flows: ESP only, no plaintext VXLAN
    on vm2 "rm -f /tmp/ul.pcap; timeout 25 tshark -q -i eth1 -a duration:12 -w /tmp/ul.pcap -f 'host $(ip_of 1) and (ip proto 50 or udp port 6784)' >/dev/null 2>&1 &
            sleep 6; echo started" >/dev/null
    on vm1 "ip netns exec c1 ping -c 10 -i 0.2 -q 10.32.2.1" >/dev/null 2>&1
    sleep 10
    esp=$(on vm2 "tshark -r /tmp/ul.pcap -Y 'ip.proto == 50' 2>/dev/null | wc -l")
    plain=$(on vm2 "tshark -r /tmp/ul.pcap -Y 'udp.port == 6784' 2>/dev/null | wc -l")
    printf 'underlay capture on vm2 eth1: %s ESP packets, %s plaintext UDP 6784 packets\n' "$esp" "$plain"
    [ "${esp:-0}" -gt 0 ] || fail "no ESP on the underlay with --password"
    [ "${plain:-1}" -eq 0 ] || fail "plaintext UDP 6784 on the underlay with --password"
    on vm1 "ip xfrm state; ip xfrm policy" >"$out/xfrm-vm1.txt" 2>&1
    on vm1 "weave-fdp status connections" | sed 's/^/  vm1: /'
  fi
  r=$(iperf)
  [ -n "$r" ] || fail "iperf3 over $label"
  mbps[$label]=${r:-0}
  printf '%-18s %8s Mbit/s\n' "$label" "${r:-FAIL}"
  if [ "$label" = "encrypted fastdp" ]; then
    # stop (vm2) and reset (vm1) take every state and policy of ours with them
    for step in "2 stop" "1 reset"; do
      read -r i cmd <<<"$step"
      before=$(ours "$i")
      on "vm$i" "weave-fdp $cmd >/dev/null 2>&1"
      after=$(ours "$i")
      printf 'vm%s: %s xfrm states and policies of ours before "weave-fdp %s", %s after\n' "$i" "$before" "$cmd" "$after"
      [ "$before" -ge 4 ] || fail "vm$i: expected 2 states and 2 policies per peer before $cmd, found $before"
      [ "$after" -eq 0 ] || fail "vm$i: xfrm entries of ours left after $cmd"
    done
  fi
done

base=${mbps[fastdp]:-0}
if [ "$base" != 0 ]; then
  echo "ratios to fastdp (same run):"
  for m in "${modes[@]}"; do
    IFS='|' read -r label _ _ <<<"$m"
    awk -v a="${mbps[$label]:-0}" -v b="$base" -v l="$label" 'BEGIN {printf "  %-18s %.2f\n", l, a / b}'
  done
fi

printf '\n== a router without the password is refused\n'
relaunch 1 --password $pw --no-fastdp
relaunch 2 --no-fastdp
sleep 20
if on vm2 "weave-fdp status connections" | grep -q established; then
  fail "vm2 without the password has an established connection"
else
  on vm2 "weave-fdp status connections" | sed 's/^/  vm2: /'
fi

printf '\n== reset leaves no xfrm state or policy\n'
for i in 1 2; do
  on "vm$i" "weave-fdp reset >/dev/null 2>&1; ip netns del c1 2>/dev/null"
  left=$(ours "$i")
  printf 'vm%s: %s xfrm entries of ours after reset\n' "$i" "$left"
  [ "$left" -eq 0 ] || fail "vm$i: xfrm entries left after reset"
done
exit $fails
