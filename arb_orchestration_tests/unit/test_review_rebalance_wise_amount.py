"""Review of the rebalance saga's execution: a Wise leg delivers what the plan credited to the venue.

The plan sizes a Wise leg from a fee fitted to quotes taken at planning time (`credited` arrives, `amount`
leaves). `prepare_transfers` used to quote Wise by *source* amount (`round(amount, 2)`): Wise deducts its fee
from the source amount, so whenever Wise charged more than planned (allowed up to `max_fee_increase`) or the
rounding went down, the venue received less than `credited` and ended below its target, while
`verify_balances` (which expects the transfer's own target value) passed. Here against the Wise simulator
in-process (its real quote maths, EUR→EUR fee 0.39) with a plan that priced the fee at 0.30.
"""

from __future__ import annotations

import pytest

from arb_orchestration.defs.rebalance.config import RebalanceConfig
from arb_orchestration.defs.rebalance.steps import _prepare_wise_leg
from arb_orchestration.domain.rebalance import PlannedTransfer
from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.wise import WiseResource
from arb_orchestration.saga import derive_key
from arb_orchestration.sim.wise import WiseSimulator

IBAN = "LT12 1000 0111 0100 1000"


@pytest.fixture(autouse=True)
def fresh_breakers():
    reset_breakers()
    yield
    reset_breakers()


class _Ctx:
    saga_id = "saga-wise-amount-1"

    def __init__(self):
        self.notes: list[dict] = []

    def key(self, *parts):
        return derive_key("prepare-step-key", *parts)

    def note(self, **details):
        self.notes.append(details)


def _wise(sim: WiseSimulator) -> WiseResource:
    return WiseResource(base_url="http://wise.invalid", api_token="t", profile_id=sim.profile_id,
                        retry_base_delay=0.001, retry_max_delay=0.01).with_transport(
        sim.mock_transport(sleep=lambda s: None))


def _leg(credited: float, fee: float) -> PlannedTransfer:
    return PlannedTransfer(0, "wise->bybit:EUR:SEPA", "wise", "wise", "bybit", "EUR", "SEPA",
                           amount=credited + fee, fee=fee, credited=credited)


def test_a_wise_leg_delivers_the_planned_credit_when_wise_charges_more_than_planned():
    sim = WiseSimulator(api_token="t", balances={"EUR": 100_000.0}, settle_delay=0.0)
    wise = _wise(sim)
    leg = _leg(3_000.00, 0.30)  # planned from quotes at 0.30; Wise now asks 0.39 (+30 %, within the +50 % allowed)
    prepared = _prepare_wise_leg(_Ctx(), wise, leg, IBAN, RebalanceConfig())
    transfer = wise.get_transfer(prepared["wise_transfer_id"])
    assert transfer.target_value == pytest.approx(3_000.00)  # what the venue receives: the plan's credit
    assert prepared["target_value"] == pytest.approx(3_000.00)
    assert transfer.source_value == pytest.approx(3_000.39)  # the extra fee comes out of the Wise balance


def test_a_wise_leg_still_refuses_a_fee_above_the_allowed_increase():
    sim = WiseSimulator(api_token="t", balances={"EUR": 100_000.0}, settle_delay=0.0)
    wise = _wise(sim)
    with pytest.raises(Exception, match="Wise now charges 0.39 EUR, planned 0.2"):
        _prepare_wise_leg(_Ctx(), wise, _leg(3_000.00, 0.20), IBAN, RebalanceConfig())
    assert sim.transfers() == []
