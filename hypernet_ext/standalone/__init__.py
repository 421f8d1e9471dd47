"""Life outside webui: tiny demo models, loading checkpoints, the command line. May import ldm, never modules."""
