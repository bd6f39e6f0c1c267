"""Lanes: one upstream API family each (Track, Pipelines, App API), sharing store and drain engine.

`service.jobs.Lane` names them; `service.lanes.registry` says what differs per lane. The
lane packages sit on top of the store and the delivery policies; nothing below imports them.
"""
