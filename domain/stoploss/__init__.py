"""Stop-loss rules judged on the stream (pure)."""
