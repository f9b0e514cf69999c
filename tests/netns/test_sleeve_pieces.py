"""Wire version 2 between lab hosts (standalone sleeve): big frames as UDP GSO trains of
pieces, sealed once per frame; negotiation with version-1 peers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from weave_fdp.lab.lab import Lab  # noqa: F401  (skip the module early if the lab is missing)

sys.path.insert(0, str(Path(__file__).parent))
from sleeve_helpers import Capture, SleeveLab, lab_factory, udp_payloads, wait_for  # noqa: E402

from weave_fdp.datapath.sleeve import wire  # noqa: E402
from weave_fdp.datapath.sleeve.sizing import container_gso_max_size  # noqa: E402
from weave_fdp.plumbing import links  # noqa: E402

MARKER = b"c0ffee15900d-pieces-"
SERVER = ("import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
          "s.bind(('0.0.0.0',5001));s.listen(1);c,_=s.accept();n=0\n"
          "while True:\n d=c.recv(1<<16)\n if not d: break\n n+=len(d)\nprint(n)\n")
CLIENT = ("import socket,sys\nc=socket.create_connection((sys.argv[1],5001))\n"
          "c.sendall(bytes.fromhex(sys.argv[2])*int(sys.argv[3]));c.close()\n")


class PiecesLab(SleeveLab):
    """A SleeveLab whose hosts in ``v1`` speak only wire version 1 (``pieces: false``)."""

    def __init__(self, tmp: Path, v1: tuple[int, ...] = (), **kw: Any) -> None:
        super().__init__(tmp, **kw)
        self.v1 = v1

    def config(self, i: int) -> dict[str, Any]:
        return {**super().config(i), "pieces": i not in self.v1}


@pytest.fixture
def pieces_lab(tmp_path: Path):
    yield from lab_factory(PiecesLab, tmp_path)


def bulk(sl: SleeveLab, megabytes: int = 3) -> int:
    """``megabytes`` of MARKER over TCP from container 1.1 to 2.1; bytes the server got."""
    srv = sl.lab.popen_container(2, 1, [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    time.sleep(0.4)
    n = megabytes * (1 << 20) // len(MARKER)
    sl.lab.exec_container(1, 1, [sys.executable, "-c", CLIENT, "10.32.2.1", MARKER.hex(), str(n)], timeout=60)
    out, _ = srv.communicate(timeout=30)
    return int(out.strip() or 0)


def peer(sl: SleeveLab, i: int) -> dict[str, Any]:
    return sl.status(i)["peers"][0]


def test_encrypted_pieces_hide_frames_and_refuse_replayed_and_forged_trains(pieces_lab) -> None:
    sl = pieces_lab(hosts=2, container_mtu=1399, password="s3cret")
    assert wait_for(lambda: peer(sl, 1)["wire_version"] == 2 and peer(sl, 2)["wire_version"] == 2)

    cap = Capture(sl, 2, "pieces")
    got = bulk(sl)
    payloads = udp_payloads(cap.stop())
    assert got == 3 * (1 << 20) // len(MARKER) * len(MARKER)
    # the status files are rewritten every 0.5 s: wait for the snapshot that saw the transfer
    assert wait_for(lambda: sl.status(1)["stats"]["pieced_tx"] > 0 and sl.status(2)["stats"]["pieced_rx"] > 0)
    # this kernel takes a receive ring with vnet headers: the frames came through it
    assert sl.status(1)["capture"] == sl.status(2)["capture"] == "recv"     # the ring is off (state.py)
    from_h1 = [p for src, p in payloads if src == sl.lab.host_ip(1)]
    # veths pass a GSO train whole, so the capture holds trains: cut them at the segment size
    seg = peer(sl, 1)["pmtu"]
    pieces = [p[o:o + seg] for p in from_h1 if p[0] == wire.PIECE_VERSION for o in range(0, len(p), seg)]
    assert all(p[0] == wire.PIECE_VERSION for p in pieces)
    assert len(pieces) > 100, "big frames should cross as pieces"
    assert all(p[1] & wire.FLAG_SEALED for p in pieces)
    assert not any(MARKER[:12] in p for _, p in payloads), "plaintext inner frame on UDP 6783"

    # One whole train from the capture, replayed, then relabelled with a fresh sequence number
    # (so it reassembles) and one flipped bit: refused as replay, then as forged.
    seq = pieces[0][8:16]
    train = [p for p in pieces if p[8:16] == seq]
    assert sum(len(p) - wire.PIECE.size for p in train) == int.from_bytes(train[0][16:20], "big"), \
        "the capture lost a piece of the first train"
    fresh = (int.from_bytes(seq, "big") + 10 ** 9).to_bytes(8, "big")
    forged = [p[:8] + fresh + p[16:] for p in train]
    forged[-1] = forged[-1][:-1] + bytes([forged[-1][-1] ^ 1])
    sender = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
              "for h in sys.argv[2:]: s.sendto(bytes.fromhex(h),(sys.argv[1],6783))\n")
    before = sl.status(2)["drops"]
    sl.lab.exec(1, [sys.executable, "-c", sender, sl.lab.host_ip(2), *[p.hex() for p in train + forged]])
    assert wait_for(lambda: sl.status(2)["drops"].get("auth-failed", 0) > before.get("auth-failed", 0))
    drops = sl.status(2)["drops"]
    assert drops.get("replay", 0) + drops.get("too-old", 0) >= len(train), drops
    # It keeps serving.
    sl.lab.exec_container(1, 1, ["ping", "-c", "2", "-i", "0.2", "10.32.2.1"])


@pytest.mark.parametrize("password", [None, "s3cret"], ids=["plain", "sealed"])
def test_version1_peer_gets_no_pieces_and_traffic_still_flows(pieces_lab, password: str | None) -> None:
    sl = pieces_lab(hosts=2, container_mtu=1399, password=password, v1=(1,))
    time.sleep(1.2)       # a few heartbeats each way
    assert peer(sl, 1)["wire_version"] == 1 and peer(sl, 2)["wire_version"] == 1
    srv = sl.lab.popen_container(2, 1, ["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    out = sl.lab.exec_container(1, 1, ["iperf3", "-c", "10.32.2.1", "-t", "1", "-J"], timeout=30).stdout
    srv.wait(5)
    assert json.loads(out)["end"]["sum_received"]["bits_per_second"] > 50e6
    for i in (1, 2):
        st = sl.status(i)
        assert st["stats"]["pieced_tx"] == 0 and st["stats"]["pieced_rx"] == 0, st["stats"]
        assert not st["drops"], st["drops"]


def test_containers_capped_for_the_sleeve_send_each_super_frame_in_one_train(pieces_lab) -> None:
    """ethwe at the kernel's default GSO limit: 64 KiB super-frames need two UDP GSO trains;
    at ``container_gso_max_size`` (what the router's attach sets) every one fits one."""
    sl = pieces_lab(hosts=2)
    assert wait_for(lambda: peer(sl, 1)["wire_version"] == 2 and peer(sl, 2)["wire_version"] == 2)

    def trains_and_frames() -> tuple[int, int]:
        before = sl.status(1)["stats"]
        assert bulk(sl, 4) > 0
        done = time.time()
        assert wait_for(lambda: sl.status(1)["written"] > done, timeout=10)
        st = sl.status(1)["stats"]
        return st["piece_trains"] - before["piece_trains"], st["pieced_tx"] - before["pieced_tx"]

    cns = sl.lab.container_ns(1, 1)
    # full-size super-frames even when a loaded machine slows the stream (TSO autosizing would
    # otherwise build smaller ones, which fit one train anyway and prove nothing)
    sl.lab.exec_container(1, 1, ["sysctl", "-qw", "net.ipv4.tcp_min_tso_segs=64"])
    assert links.get_gso_max_size("ethwe", cns) == 65536
    trains, frames = trains_and_frames()
    assert frames > 10 and trains > frames, (trains, frames)
    links.set_gso_max_size("ethwe", container_gso_max_size(sl.lab.mtu), cns)
    assert links.get_gso_max_size("ethwe", cns) == 63669
    trains, frames = trains_and_frames()
    assert frames > 10 and trains == frames, (trains, frames)
