"""maskrl's benchmarks and studies: thin scripts over :mod:`benchmarks.common`.

Run them from the repository root as modules, e.g. ``python -m benchmarks.masking_study --quick``.
"""
