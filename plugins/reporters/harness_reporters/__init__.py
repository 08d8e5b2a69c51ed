"""Built-in reporters plugins of harness."""
