"""The scripts that built the judge evaluation set in safetyheads/data/judge_eval/ (run from the repository
root: ``python -m tools.judge_eval.build_candidates``, then ``python -m tools.judge_eval.assemble``)."""
