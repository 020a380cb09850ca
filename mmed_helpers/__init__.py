"""mmed_helpers: the library behind the mmed-course notebooks.

One module per concern (see DESIGN.md): ``config`` (profiles), ``corpus`` (bundled passages), ``tiny`` (the
embedded smoke model), ``base_model`` (build or locate the base), ``env`` (machine report), ``artifacts``
(run folders and manifests), ``notebook`` (what each notebook does first), ``runner``/``cli`` (papermill runs),
``plots``. Importing the package is cheap: heavy libraries load inside the functions that need them.
"""

__version__ = "0.1.0"
