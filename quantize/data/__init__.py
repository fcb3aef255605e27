"""quantize/data."""
