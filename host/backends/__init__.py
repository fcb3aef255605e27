"""host/backends."""
