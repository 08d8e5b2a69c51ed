"""The pipeline: a run of an experiment, as jobs an executor runs, with every result stored as it arrives.

* :mod:`.runner` — the driver: split, plan the jobs, store what they yield with the records of what ran;
* :mod:`.jobs` — the jobs (fine-tune, generate, score) and what they yield; picklable, for any executor;
* :mod:`.keys` — cache keys, pure functions shared by the driver and the workers;
* :mod:`.progress` — progress in a terminal and in the run's log;
* :mod:`.procs` — processes a run leaves behind (stopped on Ctrl-C and SIGTERM).

It shares the core (the plugin API, the registry, the store) with the reporting wing
(:mod:`harness.report`) and never imports it.
"""
