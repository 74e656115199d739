"""The NixFleet agent: dials out to the dashboard and runs commands on its host."""
