"""Stand-in of sgm/models/__init__.py."""
