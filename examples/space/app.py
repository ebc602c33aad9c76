"""The fourm-hf web demo as a Hugging Face Space (or anywhere: ``python app.py``).

The checkpoint is ``FOURM_CHECKPOINT``: a folder or a Hub repo id with a FourM model and its
processor (default: the checkpoint bundled in the package, ``fourm-scenes64``). The app is the one
``fourm-hf demo --web`` serves (``fourm_hf/app/web_app.py``); a Space sets ``GRADIO_SERVER_NAME`` and
``GRADIO_SERVER_PORT``, and they default to 127.0.0.1:7860 elsewhere.
"""

import os

from fourm_hf.app.web_app import build_app, launch

CHECKPOINT = os.environ.get("FOURM_CHECKPOINT") or None

if __name__ == "__main__":
    launch(CHECKPOINT, host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
           port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
else:  # imported (gradio's reload mode, tests): the app object, not served
    demo = build_app(CHECKPOINT)
