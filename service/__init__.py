"""The BentoML service: HTTP surface, settings, metrics."""
