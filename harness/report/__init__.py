"""The reporting wing: reads what a run recorded and turns it into numbers people can trust.

Nothing here builds a model or an engine, loads a metric's model, or recomputes a cache key:
every module reads the recorded results (see :mod:`harness.report.results`). The only plugin
code it runs is a corpus-level metric's numpy resampling (``Metric.corpus_values``), for
intervals; where that plugin is not installed the recorded values show without them.
"""
