"""Built-in omnidiff domains, registered through the omnidiff.domains entry point."""
