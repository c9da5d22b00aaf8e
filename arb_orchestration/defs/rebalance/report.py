"""What operators see: plan tables, fee against the naive baseline, guardrail verdicts, the run summary.

Pure formatting (markdown strings and Dagster `MetadataValue`s) shared by the
saga's steps and the `rebalance_plan` asset.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from dagster import MetadataValue

from arb_orchestration.defs.rebalance.planning import Proposal
from arb_orchestration.domain.rebalance import ASSET_DECIMALS, PlannedTransfer


def fmt(asset: str, amount: float | None) -> str:
    if amount is None:
        return "–"
    decimals = ASSET_DECIMALS.get(asset, 8)
    return f"{amount:,.{decimals}f}"


def _eta(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def legs_markdown(legs: Sequence[PlannedTransfer], extra: Mapping[int, Mapping[str, Any]] | None = None,
                  extra_columns: Sequence[str] = ()) -> str:
    """One row per leg; `extra[index][column]` fills `extra_columns` (ids, status, arrival...)."""
    if not legs:
        return "_no transfers_"
    head = ["#", "leg", "from → to", "asset", "network", "sends", "fee", "arrives", "eta", *extra_columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in legs:
        cells = [
            str(t.index), "Wise" if t.kind == "wise" else "withdrawal", f"{t.from_venue} → {t.to_venue}", t.asset,
            t.network, fmt(t.asset, t.amount), fmt(t.asset, t.fee), fmt(t.asset, t.credited), _eta(t.eta_seconds),
        ]
        row = (extra or {}).get(t.index, {})
        cells += [str(row.get(c, "")) for c in extra_columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fees_markdown(proposal: Proposal) -> str:
    """Fee of the executed legs and of the whole optimal plan against the direct-only baseline, per asset."""
    run_fee = proposal.fee_of(proposal.run_now)
    assets = sorted(set(proposal.plan_fee) | set(run_fee))
    if not assets:
        return "_no fees: nothing to move_"
    lines = ["| asset | fee (this run) | optimal plan | naive (direct only) | saved |", "|---|---|---|---|---|"]
    for a in assets:
        naive = proposal.naive_fee.get(a)
        optimal = proposal.plan_fee.get(a)
        saved = "–" if naive is None or optimal is None else fmt(a, naive - optimal)
        lines.append(f"| {a} | {fmt(a, run_fee.get(a, 0.0))} | {fmt(a, optimal)} | "
                     f"{fmt(a, naive) if naive is not None else 'infeasible'} | {saved} |")
    return "\n".join(lines)


def targets_markdown(proposal: Proposal) -> str:
    rows = sorted(proposal.targets.rows, key=lambda r: (r.asset, r.venue))
    if not rows:
        return "_no managed venue_"
    lines = ["| venue | asset | free | floor | share | trigger | target | deficit |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = "–" if r.share is None else f"{r.share:.0%}"
        mark = " **⚠**" if r.deficit > 0 else ""
        lines.append(f"| {r.venue} | {r.asset} | {fmt(r.asset, r.balance)} | {fmt(r.asset, r.floor)} | {share} | "
                     f"{fmt(r.asset, r.trigger)} | {fmt(r.asset, r.target)} | {fmt(r.asset, r.deficit)}{mark} |")
    for asset, amount in sorted(proposal.fiat_balances.items()):
        lines.append(f"| wise (source) | {asset} | {fmt(asset, amount)} | | | | | |")
    return "\n".join(lines)


def verdict_lines(proposal: Proposal) -> list[str]:
    lines = [f"- **infeasible** {a}: {why}" for a, why in sorted(proposal.infeasible.items())]
    lines += [f"- **{b.rule}**: {b.message}" for b in proposal.breaches]
    lines += [f"- skipped {a}: {why}" for a, why in sorted(proposal.skipped.items())]
    lines += [f"- deferred #{t.index} ({t.rail}): relays through {t.from_venue}; the next rebalance re-plans it"
              for t in proposal.deferred]
    lines += [f"- {note}" for note in proposal.fiat_notes]
    if proposal.allowlist_excluded:
        lines.append(f"- destination allowlist excluded {len(proposal.allowlist_excluded)} rail(s) from planning: "
                     + ", ".join(proposal.allowlist_excluded))
    if proposal.withdrawal_excluded:
        lines.append(f"- no idempotent withdrawal (no client withdrawal id) out of the source venue: excluded "
                     f"{len(proposal.withdrawal_excluded)} rail(s) from planning: "
                     + ", ".join(proposal.withdrawal_excluded))
    return lines


def proposal_markdown(proposal: Proposal, *, title: str) -> str:
    verdict = "may run" if proposal.may_run else "**blocked: nothing will move**"
    used = ", ".join(f"{fmt(a, v)} {a}" for a, v in sorted(proposal.used_today.items())) or "nothing"
    parts = [
        f"### {title}",
        f"Verdict: {verdict}. Already moved or reserved today: {used}.",
        "#### Transfers (executable order)",
        legs_markdown(proposal.run_now),
        "#### Fees",
        fees_markdown(proposal),
        "#### Targets",
        targets_markdown(proposal),
    ]
    notes = verdict_lines(proposal)
    if notes:
        parts += ["#### Notes", "\n".join(notes)]
    return "\n\n".join(parts)


def proposal_metadata(proposal: Proposal, *, title: str) -> dict[str, MetadataValue]:
    run_fee = proposal.fee_of(proposal.run_now)
    return {
        "plan": MetadataValue.md(proposal_markdown(proposal, title=title)),
        "transfers": MetadataValue.int(len(proposal.run_now)),
        "total_fee": MetadataValue.json({a: round(v, 8) for a, v in run_fee.items()}),
        "naive_fee": MetadataValue.json(
            {a: (None if v is None else round(v, 8)) for a, v in proposal.naive_fee.items()}
        ),
        "deficits": MetadataValue.json({a: round(v, 8) for a, v in proposal.needs.items()}),
        "may_run": MetadataValue.bool(proposal.may_run),
        "guardrails": MetadataValue.json([b.to_dict() for b in proposal.breaches]),
        "allowlist_excluded_rails": MetadataValue.int(len(proposal.allowlist_excluded)),
        # rails out of venues that cannot withdraw idempotently (no client withdrawal id)
        "withdrawal_excluded_rails": MetadataValue.int(len(proposal.withdrawal_excluded)),
        "legs": MetadataValue.json([t.to_dict() for t in proposal.run_now]),
    }


def summary_markdown(
    legs: Sequence[PlannedTransfer],
    ids: Mapping[int, Mapping[str, Any]],
    verification: Sequence[Mapping[str, Any]],
    *,
    saga_id: str,
    fee_by_asset: Mapping[str, float],
    naive_fee: Mapping[str, float | None],
) -> str:
    """The executed plan, as the last step reports it."""
    parts = [
        f"### Rebalance {saga_id}: executed",
        legs_markdown(legs, ids, ("id", "status", "arrived after")),
        "#### Fees",
        "\n".join(
            f"- {a}: {fmt(a, v)} (naive: {fmt(a, naive_fee.get(a)) if naive_fee.get(a) is not None else 'infeasible'})"
            for a, v in sorted(fee_by_asset.items())
        ) or "_none_",
        "#### Balances verified",
    ]
    if verification:
        lines = ["| venue | asset | before | expected ≥ | now | ok |", "|---|---|---|---|---|---|"]
        for v in verification:
            a = v["asset"]
            lines.append(f"| {v['venue']} | {a} | {fmt(a, v['before'])} | {fmt(a, v['expected'])} | "
                         f"{fmt(a, v['now'])} | {'✅' if v['ok'] else '❌'} |")
        parts.append("\n".join(lines))
    else:
        parts.append("_nothing to verify_")
    return "\n\n".join(parts)
