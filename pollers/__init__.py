"""Connections to ad platforms: encrypted tokens, the connections store, and the pieces
every real poller shares (failure kinds, backoff, the circuit breaker, publishing)."""
