"""The GPU proof: `bench/gpu/check` (see README.md)."""
