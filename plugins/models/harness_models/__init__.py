"""Built-in models plugins of harness."""
