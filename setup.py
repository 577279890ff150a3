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
    package_data={
        "zibrato": ["py.typed"],  # PEP 561: users' type checkers read our annotations
        "zibrato.web": ["static/*"],
    },  # the web view's page, script and style
    python_requires=">=3.10",
    # tomli: --config files on Python 3.10 (3.11 has tomllib)
    install_requires=[
        "pyzmq>=25",
        "msgpack>=1.0",
        "requests>=2.25",
        "click>=8.0",
        'tomli>=1.1; python_version < "3.11"',
    ],
    extras_require={
        "otlp": ["opentelemetry-proto>=1.20", "protobuf>=4.21"],
        # protobuf: the generated messages of zibrato/backends/prometheus_proto need its 7.35 runtime
        "prometheus": ["prometheus_client>=0.17", "protobuf>=7.35"],
        # cramjam: snappy's block format, in wheels for every platform, no C library to build
        "remote-write": ["prometheus_client>=0.17", "protobuf>=7.35", "cramjam>=2.8"],
        # zibrato.integrations: each imports its framework only when imported; these extras
        # only state the oldest versions they were written for (none is a client dependency)
        "flask": ["flask>=2.3"],  # 2.3: signals always available (blinker)
        "django": ["django>=4.2"],
        "starlette": ["starlette>=0.27"],
        "fastapi": ["fastapi>=0.100"],
        "celery": ["celery>=5.3"],
        # zibrato.otel: the OpenTelemetry metrics API (the API only: never the SDK at run time)
        "otel": ["opentelemetry-api>=1.23"],
        "test": [
            "pytest>=7",
            "pytest-timeout>=2.1",
            # bin/test --fast runs its lane on several workers (the tests mostly wait)
            "pytest-xdist>=3.2",  # --dist worksteal
            "expecter>=0.3",
            "supervisor>=4.2",
            "hypothesis>=6",
            # zibrato-listen's tests send through these real statsd clients
            "statsd>=4.0",
            "datadog>=0.49",
            # the Graphite tests read carbon's whisper files back
            "whisper>=1.1",
            # the web view's tests drive the real chromium
            "selenium>=4.10",
            # a real pre-fork server: the client's fork safety under gunicorn
            "gunicorn>=21",
            # the OTLP and Prometheus destinations' own extras
            "opentelemetry-proto>=1.20",
            "protobuf>=4.21",
            "prometheus_client>=0.17",
            "cramjam>=2.8",
            # zibrato.integrations' tests: the real frameworks and servers (uvicorn for ASGI,
            # httpx for Starlette's TestClient, redis for Celery's broker transport)
            "flask>=2.3",
            "django>=4.2",
            "fastapi>=0.100",
            "starlette>=0.27",
            "uvicorn>=0.30",
            "httpx>=0.24",
            "celery[redis]>=5.3",
            # zibrato.otel's tests: the API, the real instrumentations recording through it, the
            # frameworks they instrument, and the SDK (compared with, never used by zibrato.otel)
            "opentelemetry-api>=1.23",
            "opentelemetry-sdk>=1.23",
            "opentelemetry-instrumentation-wsgi>=0.44b0",
            "opentelemetry-instrumentation-asgi>=0.44b0",
            "opentelemetry-instrumentation-flask>=0.44b0",
            # bin/lint, and bin/test's coverage; linters pinned so that a new release cannot fail CI
            "coverage>=7.10",
            "ruff==0.17.6",
            "mypy==2.4.1",
            "types-requests",
        ],
        # bench/sketch.py compares zibrato.sketch with these peers, bench/otel.py zibrato.otel with
        # the OpenTelemetry SDK (not needed to run Zibrato)
        "bench": [
            "ddsketch>=3",
            "fastdigest>=0.6",
            "datasketches>=5",
            "opentelemetry-api>=1.23",
            "opentelemetry-sdk>=1.23",
        ],
    },
    entry_points={
        "console_scripts": [
            "zibrato = zibrato.cli:main",
            "zibrato-broker = zibrato.cli.broker:main",
            "zibrato-console = zibrato.cli.console:main",
            "zibrato-statsd = zibrato.cli.statsd:main",
            "zibrato-librato = zibrato.cli.librato:main",
            "zibrato-listen = zibrato.cli.listen:main",
            "zibrato-graphite = zibrato.cli.graphite:main",
            "zibrato-influxdb = zibrato.cli.influxdb:main",
            "zibrato-web = zibrato.cli.web:main",
            "zibrato-forward = zibrato.cli.forward:main",
            "zibrato-otlp = zibrato.cli.otlp:main",
            "zibrato-prometheus = zibrato.cli.prometheus:main",
            "zibrato-remote-write = zibrato.cli.remote_write:main",
        ],
        # every destination is registered here, by its spec; a third-party package adds one the same way
        "zibrato.destinations": [
            "console = zibrato.backends.console_spec:SPEC",
            "statsd = zibrato.backends.statsd_spec:SPEC",
            "librato = zibrato.backends.librato_spec:SPEC",
            "graphite = zibrato.backends.graphite_spec:SPEC",
            "influxdb = zibrato.backends.influxdb_spec:SPEC",
            "web = zibrato.backends.web_spec:SPEC",
            "otlp = zibrato.backends.otlp_spec:SPEC",
            "prometheus = zibrato.backends.prometheus_spec:SPEC",
            "remote-write = zibrato.backends.remote_write_spec:SPEC",
            "forward = zibrato.forward_spec:SPEC",
        ],
        "pytest11": ["zibrato = zibrato.testing"],
        # OTEL_PYTHON_METER_PROVIDER=zibrato: the OpenTelemetry API builds zibrato.otel.MeterProvider()
        "opentelemetry_meter_provider": ["zibrato = zibrato.otel:MeterProvider"],
    },
    classifiers=[
        "License :: OSI Approved :: BSD License",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: System :: Monitoring",
    ],
)
