"""Built-in human-rating formats: csv (a blinded spreadsheet)."""
