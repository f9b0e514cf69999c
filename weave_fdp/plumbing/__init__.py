"""plumbing: the only importer of pyroute2 (netns, links, bridge, veth, vxlan, tc/XDP attach).

pyroute2 forks short-lived helpers (to open sockets in other namespaces) and stops
them with SIGTERM. A fork inherits the parent's Python signal handlers, so with a
handler that raises (a daemon's graceful stop, the demo's Ctrl-C emulation) the
helper would run the parent's code from its copy of the stack. pyroute2's switch
below makes its helpers take the default SIGTERM action instead.
"""

from pyroute2 import config as _pyroute2_config

_pyroute2_config.disable_mp_signal = True
