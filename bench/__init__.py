"""Benchmarks and the chaos soak; they print figures and are never timed assertions."""
