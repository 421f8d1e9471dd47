"""The Create, Train and Compare tabs (gradio 3.41 blocks). They import gradio, never webui's ``modules``, and
talk to a Backend (ui/backend.py): webui's session inside webui, the tiny model in the standalone app.
``build_tabs(backend, txt2img)`` builds them inside the caller's gr.Tabs. Importing this package imports nothing.
"""
