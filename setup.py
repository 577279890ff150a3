"""Packaging. The version is read from zibrato/__init__.py as text: importing the
package here would need its dependencies before they are installed."""
from __future__ import annotations

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "zibrato" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="zibrato",
    version=VERSION,
    description="Turn lines of application code into production metrics (ZeroMQ, Librato, statsd).",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    packages=find_packages(include=["zibrato", "zibrato.*"]),
    package_data={"zibrato": ["py.typed"]},  # PEP 561: users' type checkers read our annotations
    python_requires=">=3.9",
    install_requires=["pyzmq>=25", "msgpack>=1.0", "requests>=2.25", "click>=8.0"],
    extras_require={
        "test": [
            "pytest>=7", "pytest-timeout>=2.1", "expecter>=0.3", "supervisor>=4.2",
            # bin/lint, and bin/test's coverage; linters pinned so that a new release cannot fail CI
            "coverage>=7.10", "ruff==0.17.6", "mypy==2.4.1", "types-requests",
        ],
    },
    entry_points={
        "console_scripts": [
            "zibrato = zibrato.cli:main",
            "zibrato-broker = zibrato.cli.broker:main",
            "zibrato-console = zibrato.cli.console:main",
            "zibrato-statsd = zibrato.cli.statsd:main",
            "zibrato-librato = zibrato.cli.librato:main",
        ],
        "pytest11": ["zibrato = zibrato.testing"],
    },
    classifiers=[
        "License :: OSI Approved :: BSD License",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Monitoring",
    ],
)
