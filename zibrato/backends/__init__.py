"""Destinations: one module per service, each a small subclass of zibrato.worker.Backend."""
