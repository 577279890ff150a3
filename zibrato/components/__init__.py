"""Component specs: each destination and daemon declared once (see spec.py and builder.py)."""
