"""Destinations: one module per service, each a pure mapping plus a small zibrato.destination.Destination."""
