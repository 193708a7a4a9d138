"""Built-in run presets (TOML)."""
