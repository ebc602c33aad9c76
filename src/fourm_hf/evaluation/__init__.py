"""Evaluation of a 4M checkpoint on held-out rendered scenes (``fourm-hf evaluate``).

- ``heldout.py``        the fixed held-out scene set (rendered in memory from a fixed seed)
- ``predictors.py``     RGB -> predictions per target: the 4M pipeline, the tokenizer ceiling,
                        a trivial baseline, the truth itself (to check the scoring)
- ``scoring.py``        runs the package's ``evaluate`` metrics, one row per predictor, markdown table
- ``caption_to_rgb.py`` caption -> RGB -> caption: are the prompt's objects found again?
- ``report.py``         ``fourm-hf evaluate``: all of the above into one table and a JSON file
"""
