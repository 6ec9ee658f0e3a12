"""What the harness runs, before anything is computed: the profiles (``profile``, ``profiles``,
``departures``, ``extension_models``), what an artefact is and produces (``artefact``), and the names of
the outcome cells that artefacts write and claims read (``cells``)."""
