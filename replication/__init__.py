"""The replication harness: one spec + runner per table or figure of Zhou et al. (ICLR 2025),
three profiles (paper, mini, ci), a content-addressed store of intermediate results, expected
values and a diff with a verdict per metric. Run it with ``python -m replication`` or the nox
sessions ``reproduce_<artefact>``."""
