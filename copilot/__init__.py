"""Ask metricx: a copilot that answers merchants only from their own numbers.

The model (official ``anthropic`` SDK) never sees SQL: it calls a few read-only tools
(``copilot.tools``), the server runs them for the authenticated workspace, and every
figure in the answer is a cited result cell that the server fills in
(``copilot.guard``).  This package is pure where it can be and has no web framework:
the route, the page and the storage build on its events (``copilot.events``).
"""
