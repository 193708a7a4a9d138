"""Defences: aggregation rules (and, later, probes) applied to the committed updates."""
