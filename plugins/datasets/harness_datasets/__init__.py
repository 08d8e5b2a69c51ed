"""Built-in datasets plugins of harness."""
