"""Pure benchmark metrics (stdlib/numpy only): pope, chair, mmhal, refomb, rewardbench, safety,
agreement, short_answer. Each metric function returns a flat dict of numbers."""
