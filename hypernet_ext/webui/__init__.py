"""The only package that imports webui's ``modules``: host adapter, session, jobs, previews, settings, the
``hypernet`` extra network and its page, and the REST routes. ``session.get_session()`` is the one owner of
runtime state (see hypernet_ext/webui/session.py for its API); ``glue`` holds the callbacks that
scripts/hypernet_ext.py registers. Importing this package imports nothing of webui.
"""
