"""weaveDNS: names of containers, gossiped between routers, answered by a DNS server on each host.

records.py   the names as pure, gossiped state (origin, version, tombstones, merge)
wire.py      the versioned gossip payload of the mesh channel "dns"
names.py     name and address rules (validation, the domain, reverse names)
snapshot.py  the immutable view of the records the server threads answer from
responder.py answers one DNS message (dnslib): the rules of docs/DNS.md; no sockets
upstream.py  the host's upstream resolvers (resolv.conf) and forwarding
server.py    the server: UDP (a process, or threads), TCP and forwarding on the router's loop
udp_thread.py one UDP server thread (blocking read-answer-send loop)
udp_process.py the DNS server process running those threads, apart from the router's GIL
process_link.py the router's side of that process; ctl.py the channel between them
service.py   the router part: gossip channel, persistence, API ops, attach/detach hook
"""
