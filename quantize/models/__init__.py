"""quantize/models."""
