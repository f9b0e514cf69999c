"""IPv4 super-frames over 64 KiB ("BIG TCP") through the sleeve, between lab hosts
(standalone sleeve): whole to a peer that takes them (``FEATURE_BIG``), cut into
train-sized super-frames for one that does not; the bytes arrive intact either way,
plain and sealed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from weave_fdp.lab.lab import Lab  # noqa: F401  (skip the module early if the lab is missing)

sys.path.insert(0, str(Path(__file__).parent))
from sleeve_helpers import SleeveLab, lab_factory, wait_for  # noqa: E402

from weave_fdp.datapath.sleeve.sizing import PORT_GSO_MAX, big_super_frame, container_gso_max_size  # noqa: E402
from weave_fdp.plumbing import links  # noqa: E402
from weave_fdp.plumbing.sleeve_port import BRIDGE_END, PCAP_END  # noqa: E402

pytestmark = pytest.mark.skipif(not links.big_tcp_supported(), reason="this kernel has no IPv4 BIG TCP (6.3+)")

# A server that counts and hashes what one connection brings; a client that sends
# ``n`` MiB of seeded random bytes and prints their hash.
SERVER = ("import hashlib,socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
          "s.bind(('0.0.0.0',5001));s.listen(1);c,_=s.accept();h=hashlib.sha256();n=0\n"
          "while True:\n d=c.recv(1<<18)\n if not d: break\n n+=len(d);h.update(d)\nprint(n,h.hexdigest())\n")
CLIENT = ("import hashlib,random,socket,sys\nr=random.Random(int(sys.argv[2]));h=hashlib.sha256()\n"
          "c=socket.create_connection((sys.argv[1],5001))\n"
          "for _ in range(int(sys.argv[3])):\n b=r.randbytes(1<<20);h.update(b);c.sendall(b)\n"
          "c.close();print(int(sys.argv[3])<<20,h.hexdigest())\n")


class BigLab(SleeveLab):
    """A SleeveLab whose hosts in ``big`` size their ports as a sleeve-only router does where
    the kernel has BIG TCP (``datapath.bridge_ports``) and say so (``big_frames``)."""

    def __init__(self, tmp: Path, big_hosts: tuple[int, ...] = (1, 2), **kw: Any) -> None:
        super().__init__(tmp, **kw)
        self.big_hosts = big_hosts

    def up(self) -> BigLab:
        super().up()
        mtu = self.lab.mtu
        for i in range(1, self.lab.hosts + 1):
            hns, cns = self.lab.host_ns(i), self.lab.container_ns(i, 1)
            links.set_gso_max_size("ethwe", container_gso_max_size(mtu), cns)
            if i in self.big_hosts:
                for dev in (BRIDGE_END, PCAP_END):
                    links.set_gso_ipv4_max_size(dev, PORT_GSO_MAX, hns)
                links.set_gso_ipv4_max_size("vethwepl1", big_super_frame(mtu), hns)
                links.set_gso_ipv4_max_size("ethwe", big_super_frame(mtu), cns)
        return self

    def config(self, i: int) -> dict[str, Any]:
        return {**super().config(i), "big_frames": i in self.big_hosts}


@pytest.fixture
def big_lab(tmp_path: Path):
    yield from lab_factory(BigLab, tmp_path)


def transfer(sl: SleeveLab, src: int, dst: int, mib: int = 24, seed: int = 7) -> None:
    """``mib`` MiB from container 1 of host ``src`` to container 1 of host ``dst``: every byte arrives."""
    srv = sl.lab.popen_container(dst, 1, [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    time.sleep(0.4)
    sent = sl.lab.exec_container(src, 1, [sys.executable, "-c", CLIENT, f"10.32.{dst}.1", str(seed), str(mib)],
                                 timeout=120).stdout.split()
    got, _ = srv.communicate(timeout=60)
    assert got.split() == sent, f"sent {sent}, the server got {got.split()}"


def stats(sl: SleeveLab, i: int) -> dict[str, int]:
    return sl.status(i)["stats"]


@pytest.mark.parametrize("password", [None, "s3cret"], ids=["plain", "sealed"])
def test_super_frames_over_64k_cross_whole_to_a_peer_that_takes_them(big_lab, password) -> None:
    sl = big_lab(hosts=2, container_mtu=1399, password=password)
    sl.wait_peers_up()
    assert links.get_gso_ipv4_max_size("ethwe", sl.lab.container_ns(1, 1)) == big_super_frame(sl.lab.mtu)
    transfer(sl, 1, 2)
    transfer(sl, 2, 1, mib=8, seed=9)
    assert wait_for(lambda: stats(sl, 1)["big_tx"] > 20 and stats(sl, 2)["injected"] > 0)
    assert stats(sl, 1)["cut_big"] == stats(sl, 2)["cut_big"] == 0
    for i in (1, 2):
        assert not sl.status(i)["drops"], sl.status(i)["drops"]


def test_super_frames_over_64k_are_cut_for_a_peer_that_takes_none(big_lab) -> None:
    # host 2 keeps the kernel's 64 KiB limit on its ports and does not say FEATURE_BIG
    sl = big_lab(hosts=2, container_mtu=1399, big_hosts=(1,))
    sl.wait_peers_up()
    transfer(sl, 1, 2)
    transfer(sl, 2, 1, mib=8, seed=9)
    assert wait_for(lambda: stats(sl, 1)["cut_big"] > 20)
    assert stats(sl, 1)["big_tx"] == 0, "host 2 takes no frame over 64 KiB"
    for i in (1, 2):
        assert not sl.status(i)["drops"], sl.status(i)["drops"]
