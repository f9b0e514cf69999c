#!/usr/bin/env bash
# Idempotent installer for weave-fdp on Debian 12: system packages, the kernel
# headers link bcc needs, a venv that sees Debian's bcc, and weave-fdp on PATH.
# A second run installs nothing and takes a few seconds.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.venv"
log() { printf '[install] %s\n' "$*"; }
die() { printf '[install] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (the fast path loads BPF programs and creates namespaces); try: sudo $0"
command -v apt-get >/dev/null || die "apt-get not found: this installer supports Debian 12 only"

# Debian packages the project and its tests use.
packages=(
  python3 python3-venv python3-dev python3-bpfcc libbpfcc bpfcc-tools
  linux-headers-amd64 iproute2 iputils-ping iputils-arping ethtool procps psmisc
  iperf3 sockperf bind9-dnsutils tshark nftables tmux socat kmod faketime
  containernetworking-plugins
  dnsmasq-base dnsperf
)
# `make test-podman` (WEAVE_FDP_PODMAN=1): Podman, its runtime, and the static busybox of the test image.
if [ -n "${WEAVE_FDP_PODMAN:-}" ]; then
  packages+=(podman runc busybox-static)
fi
# `make profile-sleeve` (WEAVE_FDP_PROFILE=1): perf, to profile the sleeve's forwarder threads.
if [ -n "${WEAVE_FDP_PROFILE:-}" ]; then
  packages+=(linux-perf)
fi
# `make bench-sleeve-bound` (WEAVE_FDP_BOUND=1): gcc, to build the C null forwarder it measures, and
# OpenSSL's libcrypto for its AES-256-GCM variant (loaded at run time).
if [ -n "${WEAVE_FDP_BOUND:-}" ]; then
  packages+=(gcc libc6-dev libssl3)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq || die "apt-get update failed: check that Debian's package mirror is reachable"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install failed for: ${missing[*]}"
fi

# bcc compiles against /lib/modules/$(uname -r)/{build,source}. Kernels without
# shipped headers (and without IKHEADERS) get Debian's linux-headers-amd64.
kver=$(uname -r)
mod="/lib/modules/$kver"
if [ ! -e "$mod/build/include" ] && [ ! -e /sys/kernel/kheaders.tar.xz ]; then
  arch_dir=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1)
  common_dir=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1)
  [ -n "$arch_dir" ] && [ -n "$common_dir" ] || die "no kernel headers under /usr/src: apt-get install linux-headers-amd64"
  mkdir -p "$mod"
  ln -sfn "$arch_dir" "$mod/build"
  ln -sfn "$common_dir" "$mod/source"
  log "linked kernel headers for bcc: $mod/build -> $arch_dir, $mod/source -> $common_dir"
fi

# A venv that can import Debian's bcc (system site packages), with the project in it.
if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment $venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
# Optional extras (pyproject.toml): `test` always; more by WEAVE_FDP_EXTRAS=test,reliability
# (make fuzz / make soak). The stamp remembers the pyproject hash and the extras installed.
stamp="$venv/.weave-fdp-installed"
want=$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)
extras="test,${WEAVE_FDP_EXTRAS:-}"
{ read -r have_hash have_extras <"$stamp"; } 2>/dev/null || { have_hash=""; have_extras=""; }
need=0
[ "$have_hash" = "$want" ] || { need=1; have_extras=""; }
for e in ${extras//,/ }; do
  case ",$have_extras," in *",$e,"*) ;; *) need=1; have_extras="${have_extras:+$have_extras,}$e" ;; esac
done
if [ "$need" = 1 ] || ! "$venv/bin/python" -c 'import weave_fdp' 2>/dev/null; then
  log "installing weave-fdp and its Python dependencies into $venv (extras: $have_extras)"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q -e "$here[$have_extras]" || die "pip install failed: see the output above"
  echo "$want $have_extras" >"$stamp"
fi
"$venv/bin/python" -c 'import bcc' 2>/dev/null || die "bcc is not importable from $venv: apt-get install python3-bpfcc"

# weave-fdp on root's PATH.
target="$venv/bin/weave-fdp"
if [ "$(readlink /usr/local/bin/weave-fdp 2>/dev/null)" != "$target" ]; then
  ln -sfn "$target" /usr/local/bin/weave-fdp
  log "linked /usr/local/bin/weave-fdp -> $target"
fi
# The CNI plugin where runtimes look for plugins (Podman, containerd, CRI-O).
cni_target="$venv/bin/weave-fdp-cni"
if [ -x "$cni_target" ] && [ "$(readlink /opt/cni/bin/weave-fdp-cni 2>/dev/null)" != "$cni_target" ]; then
  mkdir -p /opt/cni/bin
  ln -sfn "$cni_target" /opt/cni/bin/weave-fdp-cni
  log "linked /opt/cni/bin/weave-fdp-cni -> $cni_target"
fi
log "ready"
