"""The request pipeline: pure-ASGI middleware (headers, body limit, catch-all, rate
limits, access log, TLS peer) and the one JSON error shape."""
