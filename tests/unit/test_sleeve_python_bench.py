"""``python -m weave_fdp.bench.sleeve_python``: the sleeve's hot paths timed over in-memory
sockets take the steady paths and lose nothing, plain and sealed."""

from __future__ import annotations

import pytest

from weave_fdp.bench import sleeve_python as sp


@pytest.mark.parametrize("sealed", [False, True])
def test_every_hot_path_is_timed_and_every_frame_arrives(sealed: bool) -> None:
    r = sp.measure(sealed=sealed, n=20)      # raises when a frame is lost or a train misses _rx_train
    assert set(r) == {"send_super", "receive_super", "send_ack", "receive_ack", "null_send_super"}
    assert r["send_ack"] > 0 and r["receive_ack"] > 0 and r["null_send_super"] > 0


def test_a_bad_count_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert sp.main(["--n", "3"]) == 2
    assert "error: --n out of range" in capsys.readouterr().err
