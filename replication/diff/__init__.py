"""Results against expectations: the stored expected values (``expected``), the verdict of each metric
(``verdicts``), and the mini/ci baselines written from generated results on request (``baselines``)."""
