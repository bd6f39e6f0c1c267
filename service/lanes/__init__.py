"""Lanes: one upstream API family each (Track, Pipelines, App API), sharing store and drain engine.

`service.jobs.Lane` names them; `service.lanes.registry` says what differs per lane. A
lane's folder holds its job kinds (``jobs.py``), its ingest routes (``routes.py``) and
its way out to Customer.io (``client.py``). The lane packages sit on top of the store
and the delivery policies; nothing below imports them (the engine, store and metrics go
through the registry).
"""
