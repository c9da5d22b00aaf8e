"""The exchange simulator: several named venues behind one local HTTP server.

    sim = ExchangeSimulator(seed=42, api_key="k")
    url = sim.start()                 # http://127.0.0.1:<free port>
    sim.state.credit("kraken", "EUR", 10_000)
    sim.faults.add({"kind": "rate_limit", "venue": "okx", "count": 2, "retry_after": 0.2})
    sim.stop()

`state` (`ExchangeState`) is the in-memory world (pure, one lock), `faults`
(`FaultInjector`) the injected faults; the HTTP API is documented in
docs/exchange-simulator.md. Run it on its own with
`python -m arb_orchestration.sim.exchange --port 8701` (the API key comes
from `EXCHANGE_SIM_API_KEY`, if set).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

from arb_orchestration.sim.exchange_faults import ENDPOINTS, KINDS, Fault, FaultInjector
from arb_orchestration.sim.exchange_http import API_KEY_HEADER, ExchangeApi, SimHTTPServer
from arb_orchestration.sim.exchange_specs import NetworkSpec, PerpSpec, PositionSpec, VenueSpec, default_venues
from arb_orchestration.sim.exchange_state import ExchangeState, SimError, crypto_address, venue_iban

__all__ = [
    "API_KEY_HEADER",
    "ENDPOINTS",
    "KINDS",
    "ExchangeSimulator",
    "ExchangeState",
    "Fault",
    "FaultInjector",
    "NetworkSpec",
    "PerpSpec",
    "PositionSpec",
    "SimError",
    "VenueSpec",
    "crypto_address",
    "default_venues",
    "venue_iban",
]

log = logging.getLogger("arb_orchestration.sim.exchange")


class ExchangeSimulator:
    """Hosts `venues` (default: binance, okx, bybit, kraken, hyperliquid) over HTTP.

    `tick_interval` seconds between random-walk steps on a background thread
    (None: prices move only on `POST /admin/tick` / `state.tick()`).
    `withdrawal_hold` is how long a withdrawal stays cancellable (pending)
    before it is broadcast; `settle_delay`, when set, replaces every network's
    own settle time (broadcast → credited).
    """

    def __init__(
        self,
        venues: list[VenueSpec] | None = None,
        seed: int = 42,
        api_key: str | None = None,
        *,
        tick_interval: float | None = 1.0,
        withdrawal_hold: float = 0.5,
        settle_delay: float | None = None,
    ):
        self.seed = seed
        self.tick_interval = tick_interval
        self.state = ExchangeState(venues, seed, withdrawal_hold=withdrawal_hold, settle_delay=settle_delay)
        self.faults = FaultInjector(seed)
        self._stopping = threading.Event()
        self._api = ExchangeApi(self.state, self.faults, api_key=api_key or None, wait=self._stopping.wait)
        self._server: SimHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the exchange simulator is not running; call start() first")
        return self._url

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in daemon threads; returns the base URL (port 0: a free port)."""
        if self._server is not None:
            raise RuntimeError("the exchange simulator is already running")
        self._stopping.clear()
        self._server = SimHTTPServer((host, port), self._api, self._stopping)
        bound_host, bound_port = self._server.server_address[:2]
        self._url = f"http://{bound_host}:{bound_port}"
        serve = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="exchange-sim-http", daemon=True
        )
        serve.start()
        self._threads = [serve]
        if self.tick_interval:
            ticker = threading.Thread(target=self._tick_loop, name="exchange-sim-ticker", daemon=True)
            ticker.start()
            self._threads.append(ticker)
        log.info("exchange simulator serving %s on %s", ", ".join(self.state.venue_names()), self._url)
        return self._url

    def _tick_loop(self) -> None:
        while not self._stopping.wait(self.tick_interval):
            try:
                self.state.tick()
            except Exception:  # a bug in one step must not freeze prices silently
                log.exception("exchange simulator tick failed")

    def stop(self) -> None:
        """Stop serving, drop open connections, join the threads. Safe to call twice."""
        server, self._server = self._server, None
        self._stopping.set()
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        self._url = None

    def __enter__(self) -> "ExchangeSimulator":
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:  # never shows the API key
        return f"ExchangeSimulator(venues={self.state.venue_names()}, seed={self.seed}, url={self._url})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the exchange simulator on its own.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8701)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tick-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sim = ExchangeSimulator(
        seed=args.seed, api_key=os.environ.get("EXCHANGE_SIM_API_KEY") or None, tick_interval=args.tick_interval
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(sim.start(args.host, args.port), flush=True)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
