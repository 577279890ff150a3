"""Request and task timing for the frameworks Python code already runs on.

Each module is an optional import that needs its framework only when it is
imported: ``zibrato.integrations.wsgi`` and ``.asgi`` need nothing but the
client; ``.flask``, ``.django``, ``.starlette`` and ``.celery`` import their
framework. None of them is a dependency of the client: the extras
``zibrato[flask]``, ``[django]``, ``[starlette]``, ``[fastapi]`` and
``[celery]`` only state the versions each module was written for. Every one
records through the client's public API only.

What is recorded, and why each choice: docs/INTEGRATIONS.md.
"""
