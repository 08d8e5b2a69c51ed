"""Built-in decoders plugins of harness."""
