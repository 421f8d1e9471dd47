"""Stand-in of sgm/modules/distributions/__init__.py."""
