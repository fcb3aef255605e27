"""hw/steps."""
