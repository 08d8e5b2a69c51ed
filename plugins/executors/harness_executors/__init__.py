"""Built-in executors: local (every job in this process)."""
