"""weave-fdp: an overlay network for containers with an eBPF/XDP fast datapath."""

__version__ = "0.1.0"
