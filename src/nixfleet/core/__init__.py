"""The rules of NixFleet, without I/O: shared by the dashboard and the agent."""
