"""The fleet wing: hosts and commands (decide, store, publish), agent connections,
agent credentials and grouped heartbeat writes."""
