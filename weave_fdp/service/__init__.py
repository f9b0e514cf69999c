"""Installing weave-fdp as a service: the systemd unit and the CNI plugin (``weave-fdp setup``)."""
