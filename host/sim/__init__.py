"""host/sim."""
