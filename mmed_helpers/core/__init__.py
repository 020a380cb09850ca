"""The foundations every step of the course stands on. Nothing here imports from ``mmed_helpers.steps``.

* facts defined once: ``languages`` (the six languages and everything keyed by language), ``mcformat`` (how an
  MC item is asked and answered), ``layout`` (the package's data and every artifact path of a run),
  ``flags`` (environment variables), ``device`` (the device and dtype rule), ``config`` (profiles);
* shared machinery: ``records`` (dataset record types and their files), ``jsonl`` (the JSONL reader),
  ``jobs`` (resumable batch work), ``llm`` (generation backends), ``quality`` (language id, support, dedup),
  ``artifacts`` (manifests, atomic writes), ``modeldir`` (model directory facts), ``corpus`` (bundled
  passages), ``tiny`` (the embedded smoke model), ``notebook`` (what every notebook does first).
"""
