"""Stand-in for webui v1.10.1's ``modules`` package (see tests/webui_stub/README.md)."""
