"""mmed_helpers: the library behind the mmed-course notebooks, in three layers.

* ``mmed_helpers.core`` - the foundations: facts defined once (languages, the MC format, the run layout,
  environment flags, the device/dtype rule, profiles) and the machinery every step shares (record types,
  JSONL, resumable jobs, generation backends, quality checks, manifests, the embedded tiny model).
* ``mmed_helpers.steps`` - one module per step of the course, named after its notebook; each imports only
  from ``core`` (and, for step 02, its sibling).
* the tools around them: ``cli`` (the ``mmed-course`` command), ``runner`` (papermill runs), ``book``
  (the Jupyter Book), ``serve`` (an OpenAI-compatible server), ``plots`` (the notebooks' figures).

Importing the package is cheap: heavy libraries load inside the functions that need them.
"""

__version__ = "0.1.0"
