"""The web view: a page of the last interval's series and live charts (``zibrato-web``).

* :mod:`zibrato.web.view`: pure mapping from summaries to the page's JSON, and
  :class:`~zibrato.web.view.History`, the last N intervals held in memory;
* :mod:`zibrato.web.server`: the standard library HTTP server (JSON endpoints,
  server-sent events, the packaged page in ``static/``);
* :mod:`zibrato.backends.web`: the worker that feeds them.

The endpoints are documented in docs/WEB.md.
"""
