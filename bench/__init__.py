"""Benchmarks that run a real NixFleet fleet (dashboard and agent processes) on loopback."""
