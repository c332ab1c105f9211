"""systemd plumbing: what makes `lensbox serve` an appliance, apart from catalog changes.

* :mod:`.runtime` — :class:`~.runtime.ServiceRuntime`, the glue `lensbox serve` wraps its
  HTTP server in (logging, READY / WATCHDOG / STOPPING, SIGHUP);
* :mod:`.sdnotify` — the sd_notify protocol for ``Type=notify`` units;
* :mod:`.logging` — JSON lines or native journald fields, stdlib only;
* :mod:`.mdwe` — whether ``MemoryDenyWriteExecute=yes`` breaks the model on this board;
* :mod:`.commands` — `lensbox config check|dropin` and `lensbox deploy`.
"""
