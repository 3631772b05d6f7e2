"""Using trained reward models: scoring records (rewards, critiques, pair margins)."""
