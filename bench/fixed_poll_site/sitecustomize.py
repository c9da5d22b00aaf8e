"""Bench only (`stop_loss_latency.py --configs fast-fixed-poll`): the event sensors' fixed long poll.

On PYTHONPATH, Python imports this at start in every process of that configuration
(daemon, code server, warm worker). When `arb_orchestration.defs.events.tuning` is
imported, `EventSensorSettings.from_env` is wrapped to return `loop_reserve_seconds=0`:
the market/capital sensors long-poll a fixed ARB_SENSOR_LONG_POLL_SECONDS instead of until
just before the daemon's next loop. Everything else, the code location's module included
(the warm worker only takes runs of the module it imported), is the fast configuration's.
"""

import importlib.abc
import importlib.util
import sys

_TARGET = "arb_orchestration.defs.events.tuning"


class _FixedPoll(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            settings = module.EventSensorSettings
            from_env = settings.from_env.__func__
            settings.from_env = classmethod(
                lambda cls, deployment=None: from_env(cls, deployment).but(loop_reserve_seconds=0.0)
            )

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _FixedPoll())
