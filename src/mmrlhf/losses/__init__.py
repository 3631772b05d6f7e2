"""Pure loss functions (torch only): each returns ``(loss, metrics)`` and has a hand-computed test."""
