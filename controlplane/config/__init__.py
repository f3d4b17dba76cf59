"""The route YAML: its frozen model, loading with line numbers, and validation."""
