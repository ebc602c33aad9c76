"""``fourm-hf demo --web``: a Gradio app over ``pipeline("any-to-any")``.

* ``web_session.py``: everything the app computes, without Gradio: input checks with clear messages,
  RGB -> chosen targets, caption -> chosen targets, and the views of the outputs (upscaled images,
  a segmentation legend, a table of boxes). Unit-testable without a browser.
* ``web_app.py``: the Gradio Blocks layout on top of it, the examples, and ``launch``. Gradio is an
  optional extra (``pip install -e ".[web]"``) and is imported only there, only when the app is built.

The same ``build_app`` runs as a Hugging Face Space: ``examples/space/app.py``.
"""
