"""Benchmarks of anomalib-ssimae, one folder per question (``benchmarks/README.md``). Not part of the installed package.

The scripts run from the repository root (``python benchmarks/<folder>/<script>.py``); each puts the repository root
first on ``sys.path`` and imports shared code as ``benchmarks.<module>`` or ``benchmarks.<folder>.<module>``.
"""
