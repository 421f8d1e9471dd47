"""Stand-in of sgm (Stability-AI/generative-models at 45c443b) for the tests; see tests/sgm_stub/README.md."""
