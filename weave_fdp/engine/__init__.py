"""Container engines (Docker, Podman) reached through the Docker Engine API on a Unix socket."""
