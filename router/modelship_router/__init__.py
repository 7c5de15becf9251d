"""modelship component."""
