"""The monitoring wing: security events (log, stored events, metrics, alert rules,
notifier), the hash-chained audit log and the security panel."""
