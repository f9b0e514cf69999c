"""When containers get the sleeve's gso_max_size on a router that runs fastdp."""

from __future__ import annotations

from weave_fdp.router.overlay.fastdp import sleeve_carries_all


def test_only_when_every_connection_must_be_sealed_by_the_sleeve() -> None:
    assert sleeve_carries_all(True, False, ())                  # --password, kernel without ESP
    assert not sleeve_carries_all(True, True, ())               # ESP seals fastdp
    assert not sleeve_carries_all(False, False, ())             # plain: fastdp carries it
    assert not sleeve_carries_all(True, False, ("10.0.0.0/8",))  # trusted peers use plain fastdp
