"""Between the HTTP contracts and the catalogs: the search service and what it runs on.

* :mod:`.daemon` — :func:`~.daemon.open_daemon`, what `lensbox serve` runs (pool, bundle
  manager, systemd runtime, app);
* :mod:`.service` — one search for every contract (:class:`~.service.SearchService`):
  image bytes / URL / query id -> embed -> the instance's catalog -> outcome;
* :mod:`.query` — the common :class:`~.query.SearchQuery` and :class:`~.query.SearchOutcome`;
* :mod:`.instances` — which catalog answers a request; :mod:`.interpreters` — the shared
  TFLite interpreter pool; :mod:`.query_cache`, :mod:`.filters`, :mod:`.urlfetch`,
  :mod:`.metrics`;
* :mod:`.fallback_hook` — the cloud fallback around the local search;
  :mod:`.writes` — catalog changes from any contract.
"""
