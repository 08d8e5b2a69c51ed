"""Built-in engines plugins of harness."""
