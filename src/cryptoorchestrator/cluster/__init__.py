"""Ray: bot and risk actors, the supervisor and sweep tasks (thin shells over platform objects)."""
