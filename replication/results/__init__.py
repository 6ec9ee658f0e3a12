"""The generated outputs: where they live (``paths``, read when asked, never at import), writing an
artefact's folder (``write``: one writer per file) and reading it back (``read``)."""
