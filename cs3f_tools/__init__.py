"""Research tools beside the product, which never imports them: the synthetic cohort builder
(``cohort``), the evaluator (``evaluate``), the shared cohort scoring path of the benchmark and
the quality gate (``cohort_eval``) and the Nyul landmark training (``landmarks``)."""
