"""The NixFleet dashboard: web UI, HTTP API and the agents' WebSocket endpoint."""
