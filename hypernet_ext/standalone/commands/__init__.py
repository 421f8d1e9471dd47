"""Sub-commands of the command line (see hypernet_ext.standalone.cli)."""
