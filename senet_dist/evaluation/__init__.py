"""Evaluation: scoring a trained model on a dataset split, its report and plots, where it runs, and the leaderboard.

- :mod:`~senet_dist.evaluation.metrics`: :func:`evaluate_model` (a loaded model -> :class:`EvalReport`), sample
  predictions, the metrics themselves, and which split a version is reported on;
- :mod:`~senet_dist.evaluation.report`: :func:`write_report` (``report.json`` + ``confusion_matrix.png``,
  ``curves.png``, ``samples.png``) and the figure style every chart shares;
- :mod:`~senet_dist.evaluation.cluster`: the pipeline's evaluation as a Ray task placed like the run's workers;
- :mod:`~senet_dist.evaluation.leaderboard`: every evaluated run from the tables, as text and as a chart.

Modules are imported by their users; importing this package is cheap (no torch).
"""
