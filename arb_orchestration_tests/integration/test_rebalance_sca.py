"""`auto_rebalance_saga` with production Wise on an EU personal token, against the real local world: the
production-shaped Wise gateway (`sim/wise_production.py`) in front of the world's Wise simulator refuses to fund
through the API (Wise's SCA challenge), over real loopback HTTP, on a real temporary Dagster instance, with mail
through the SMTP sink.

(a) The refusal parks the pivot: the leg is noted in the saga log, the run shows "waiting for a human to approve
    transfer X in Wise until T" (engine event, WARNING line, run tag), the risk team is mailed what to approve; a
    person funds it "in the Wise app" (the gateway's `fund_as_human`) — before any withdrawal was sent — and the
    saga completes: the withdrawal, arrival, balances verified.
(b) Nobody funds it before the (short) deadline: the transfer is cancelled, the saga compensates (nothing moved,
    no withdrawal ever sent), the step fails with a business error, and the risk team is mailed.
"""

from __future__ import annotations

import re
import threading

import pytest
from dagster import DagsterEventType

from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.wise_production import ProductionWiseResource
from arb_orchestration.saga import InstanceSagaLog, Verdict, decide
from arb_orchestration.sim.wise_production import WiseProductionGateway
from arb_orchestration_tests.integration.test_rebalance_saga import (  # noqa: F401 - fixtures
    FAST,
    SAGA,
    _assert_rebalanced,
    _books,
    _engine_metadata,
    _instance,
    _withdrawals,
    instance,
    resources_from_env,
    short,
)

pytestmark = pytest.mark.integration

PERSONAL_TOKEN = "eu-personal-token-5b1c"  # what the gateway accepts; never the simulator's own token


@pytest.fixture(scope="module")
def gateway(local_world):
    """Production Wise's edge (SCA on funding) in front of the world's Wise simulator."""
    with WiseProductionGateway(local_world.wise_url, local_world.secrets.wise_api_token,
                               personal_token=PERSONAL_TOKEN) as gw:
        yield gw


def _production_resources(gateway, world) -> dict:
    reset_breakers()
    resources = resources_from_env()
    resources["wise"] = ProductionWiseResource(
        base_url=gateway.url, environment="custom", auth="personal_token", api_token=PERSONAL_TOKEN,
        profile_id=world.wise.profile_id, timeout_seconds=2.0, max_attempts=2, retry_base_delay=0.01,
        poll_interval_seconds=0.05,
    )
    return resources


def _run(instance, gateway, world, **config):
    return SAGA.job.execute_in_process(
        instance=instance, resources=_production_resources(gateway, world),
        run_config={**FAST, "human_funding_poll_seconds": 0.05, **config}, raise_on_error=False,
    )


def _transfer_id(subject: str) -> int:
    return int(re.search(r"approve Wise transfer (\d+)", subject).group(1))


def test_refused_funding_parks_until_a_person_funds_it_then_the_saga_completes(short, instance, gateway):
    world = short
    wise_before = world.wise.balances()["EUR"]
    seen: dict = {}

    def risk_team_member():
        """Reads the mail, then funds the transfer in 'the Wise app'."""
        try:
            [mail] = world.smtp.wait_for(1, timeout=20.0)
            seen["mail"] = mail
            seen["withdrawals_before_funding"] = list(_withdrawals(world))
            seen["funded"] = gateway.fund_as_human(world.wise.profile_id, _transfer_id(mail.subject))
        except Exception as exc:  # surfaced by the assertions below
            seen["error"] = exc

    person = threading.Thread(target=risk_team_member, daemon=True)
    person.start()
    challenges = gateway.stats["sca_challenges"]
    result = _run(instance, gateway, world, human_funding_timeout_seconds=30.0)
    person.join(timeout=5.0)
    assert "error" not in seen, seen.get("error")
    assert result.success

    # The saga went on once funded; everything else as in the API-funded happy path.
    _assert_rebalanced(world, wise_before)
    assert seen["withdrawals_before_funding"] == []  # the Wise leg was asked for first
    assert gateway.stats["sca_challenges"] == challenges + 1  # refused once; never funded again by the API

    [transfer] = world.wise.transfers()
    mail = seen["mail"]
    assert f"ACTION NEEDED: approve Wise transfer {transfer['id']}" in mail.subject
    assert "Wise app" in mail.body and f"{transfer['sourceValue']:,.2f} EUR to bybit" in mail.body
    state = InstanceSagaLog(instance).load(result.run_id)
    assert decide(SAGA.definition, state).verdict is Verdict.COMPLETED
    commit = state.step("commit_transfers")
    [parked] = [n for n in commit.progress if "parked" in n]
    assert parked["wise_transfer_id"] == transfer["id"] and parked["deadline_utc"] in mail.body
    assert commit.result["committed"]["0"]["funded_by"] == "human"

    # What the UI shows: the parked state on the pivot's step, a warning line, the run tag, then the outcome.
    waiting = _engine_metadata(instance, result.run_id, "commit_transfers", "waiting_for_human").value
    assert waiting[0]["wise_transfer_id"] == transfer["id"]
    warnings = [e.message for e in instance.all_logs(result.run_id) if e.step_key == "commit_transfers"]
    assert any(m.startswith(f"waiting for a human to approve Wise transfer {transfer['id']}") for m in warnings)
    assert instance.get_run_by_id(result.run_id).tags["arb/waiting_for_human"] == "no (funded by hand)"
    subjects = [m.subject for m in world.smtp.wait_for(2)]
    assert any("funded by hand: saga continues" in s for s in subjects)


def test_nobody_funds_before_the_deadline_cancels_the_transfer_and_compensates(short, instance, gateway):
    world = short
    books = _books(world)
    result = _run(instance, gateway, world, human_funding_timeout_seconds=1.0)
    assert not result.success

    failure = next(e for e in result.all_events if e.event_type is DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "commit_transfers"
    assert "was not funded by a person" in failure.event_specific_data.error.message
    state = InstanceSagaLog(instance).load(result.run_id)
    assert state.step("commit_transfers").failed_business
    assert decide(SAGA.definition, state).verdict is Verdict.COMPENSATED

    after = _books(world)
    assert after["balances"] == books["balances"] and after["wise_balance"] == books["wise_balance"]
    assert after["withdrawals"] == []  # no crypto leg was ever sent
    assert [status for _, status in after["wise_transfers"]] == ["cancelled"]
    assert world.wise.deliveries == []
    assert state.step("prepare_transfers").compensation["cancelled"] == [0]

    subjects = [m.subject for m in world.smtp.wait_for(3, timeout=10.0)]
    assert "ACTION NEEDED" in subjects[0]
    assert any("not approved in time" in s for s in subjects) and any("rolled back" in s for s in subjects)
    tag = instance.get_run_by_id(result.run_id).tags["arb/waiting_for_human"]
    assert tag.endswith("not funded in time, cancelled")
