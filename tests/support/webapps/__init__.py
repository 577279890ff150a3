"""Small real applications of each framework, timed by zibrato.integrations.

The same modules run in the test process (with an in-memory client) and
under real servers (gunicorn, uvicorn, a Celery worker), where each makes its
client from ``$ZIBRATO_PORT``. Each has three routes: one with a path
parameter (many raw paths, one template), one streaming its answer in
chunks, and one that raises.
"""
