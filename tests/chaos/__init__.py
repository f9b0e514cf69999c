"""Chaos tier: faults injected into labs of real routers (make chaos; chaos_short ones in make test)."""
