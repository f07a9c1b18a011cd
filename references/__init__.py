"""Independent reference implementations (PyTorch) that tests and benchmarks compare against.

Not part of the klassterfork package: nothing here imports it, so a reference cannot
share the code under test's blind spots.
"""
