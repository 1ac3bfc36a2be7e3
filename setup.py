"""The optional native scanner (see native/_l4diag_native.c); everything else is in pyproject.toml.

``optional=True``: where it cannot be compiled, l4diag installs and runs without it (slower)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("_l4diag_native", ["native/_l4diag_native.c"], optional=True)])
