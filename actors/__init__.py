"""Trader V3 actors: one module per actor, plus the supervision runtime.

- ``base``: ``SupervisedActor`` (failure reporting, one cleanup, table dispatch) and ``PeerTable``.
- ``health_supervisor``: child specs, restarts, the system state machine, the trading gate.
- ``lifecycle``: the state machine as a pure table. ``config``: actor_config.toml loading.
- ``ticker``: the Tick thread. ``supervisor_log``: the JSON-lines incident log.

Nothing is imported here so that pure modules (e.g. ``actors.lifecycle``) load without Pykka.
"""
