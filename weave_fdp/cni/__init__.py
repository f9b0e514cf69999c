"""weave-fdp as a CNI plugin (``weave-fdp-cni``): spec handling (spec.py, pure), IPAM
delegation (delegate.py) and the plugin itself (plugin.py), which asks the router."""
