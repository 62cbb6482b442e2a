# For pip releases without PEP 517 support (Python 3.6 guests); see setup.cfg.
from setuptools import setup

setup()
