"""Live connections: the agent hub (``agents``) and the in-memory live state
(``live``) that the browser fan-out, SSE and Prometheus read from."""
