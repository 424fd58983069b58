"""TOML chaos scenarios: runner, assertions, reports."""
