"""Review of the rebalance saga's execution: a ccxt venue's deposit address says which network it is for.

`prepare_transfers` refuses a leg whose destination answers a deposit address for another asset or network
than the leg's (`address_mismatch`): the withdrawal would go over the allowlisted network to an address of
another chain. `CcxtVenueClient.fetch_deposit_address` used to build the answer from the *request* (asset and
network echoed back), so on every ccxt venue that check compared the leg with itself: an exchange answering
its default network's address (e.g. an ERC20 address to a TRC20 request whose network id it did not take)
went through. Now the network and currency ccxt parsed from the answer are reported (the request only
where the exchange does not say, e.g. Binance without an explorer URL).
"""

from __future__ import annotations

from arb_orchestration.resources.ccxt_venue import CcxtVenueClient, CcxtVenueSettings
from arb_orchestration.resources.resilience import CircuitBreaker, RetrySettings


class _Exchange:
    markets = {"BTC/USDT:USDT": {"swap": True, "active": True}}
    currencies: dict = {}
    has: dict = {}

    def __init__(self, answer: dict):
        self.answer = answer
        self.asked: list[tuple] = []

    def load_markets(self):
        return self.markets

    def fetch_deposit_address(self, code, params=None):
        self.asked.append((code, dict(params or {})))
        return {"info": {}, "currency": code, **self.answer}


def _client(exchange) -> CcxtVenueClient:
    config = CcxtVenueSettings(name="okx", exchange_id="binanceusdm", api_key="k" * 16, secret="s" * 32)
    return CcxtVenueClient(config, retry=RetrySettings(max_attempts=1, base_delay=0.0), breaker=CircuitBreaker("t"),
                           sleep=lambda s: None, exchange=exchange)


def test_the_deposit_address_reports_the_network_the_exchange_answered_for():
    exchange = _Exchange({"address": "0x9f3c00000000000000000000000000000000abcd", "tag": None, "network": "ERC20"})
    address = _client(exchange).fetch_deposit_address("USDT", "TRC20")
    assert exchange.asked == [("USDT", {"network": "TRC20"})]
    assert (address.asset, address.network) == ("USDT", "ERC20")  # prepare_transfers refuses: address_mismatch


def test_the_deposit_address_reports_the_currency_the_exchange_answered_for():
    exchange = _Exchange({"address": "TXYZ", "tag": None, "network": "TRC20", "currency": "USDC"})
    address = _client(exchange).fetch_deposit_address("USDT", "TRC20")
    assert (address.asset, address.network) == ("USDC", "TRC20")


def test_an_answer_without_a_network_keeps_the_requested_one_and_the_tag():
    exchange = _Exchange({"address": "rEb8TK3gBgk5auZkwc6sHnwrGVJH8DuaLh", "tag": "108618262", "network": None})
    address = _client(exchange).fetch_deposit_address("XRP", "XRP")
    assert (address.network, address.address, address.tag) == ("XRP", "rEb8TK3gBgk5auZkwc6sHnwrGVJH8DuaLh", "108618262")
