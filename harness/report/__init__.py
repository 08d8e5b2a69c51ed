"""The reporting wing: reads what a run recorded and turns it into numbers people can trust.

Nothing here builds a model, an engine or a metric plugin, or recomputes a cache key:
every module reads the recorded results (see :mod:`harness.report.results`).
"""
