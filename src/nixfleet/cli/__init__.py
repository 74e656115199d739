"""The `nixfleet` command."""
