"""Built-in metrics plugins of harness."""
