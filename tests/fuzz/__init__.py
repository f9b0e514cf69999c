"""Coverage-guided fuzzing of every decoder that reads the network or the disk (see docs/RELIABILITY.md)."""
