"""Stand-in of sgm/modules/autoencoding/__init__.py."""
