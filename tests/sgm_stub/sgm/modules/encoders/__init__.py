"""Stand-in of sgm/modules/encoders/__init__.py."""
