"""The scripts that drew and fitted on the blind-labelled organism completions in
safetyheads/data/organism_labels/ (run from the repository root: ``python -m tools.organism_labels.draw``)."""
