"""Stand-in of sgm/modules/diffusionmodules/__init__.py."""
