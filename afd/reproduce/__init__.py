"""``afd reproduce``: the paper's tables and figures on the built-in world.

One config (:mod:`afd.reproduce.config`) expands into a list of jobs (:mod:`afd.reproduce.jobs`):
reference rows (the world's ``real`` and ``loose`` clips), one eval per base student, and
``afd train`` runs for methods x families x seeds plus the sweeps. Each job is a separate
``afd`` process writing into its own directory, and a job whose ``eval.json`` exists is skipped,
so a killed reproduction resumes where it stopped. :mod:`afd.reproduce.report` then reads the
job directories and writes ``results.json``, ``report.md``, figures and strips.
"""
