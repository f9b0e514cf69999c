"""IPAM: ring CRDT, consensus, allocator, wire and persistence codecs (pure logic); see docs/IPAM.md."""
