"""The computations artefacts share, each kept in the store under a key of everything that determines
it (``stored``: the one way a step is keyed, read, computed or planned), in the context of a run
(``context``): attribution (``steps``: Sahara, Ships), judged completions (``completions``), Figure 4b's
single-head grid (``single_heads``), the sensitivity artefact's candidate sweeps (``sweep``), the
statistics the artefacts and the claims use (``stats``), and the dry run's plan (``plan``)."""
