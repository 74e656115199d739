"""Pure security helpers: passwords, tokens, sessions, CSRF."""
