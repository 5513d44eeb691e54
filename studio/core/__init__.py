"""The headless engine of Studio. Nothing in here may import Qt (a test enforces it)."""
