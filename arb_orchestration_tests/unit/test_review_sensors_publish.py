"""Review: `arb-orchestration publish` with EVENT_SIGNING_KEY set and a value that has no canonical JSON form.

`1e400` is valid JSON that Python reads as infinity, and `"\\ud800"` a lone
surrogate; neither can be serialised for signing. Without a key the command said
"not JSON" (exit 2); with one it crashed with a traceback. Now both say why, exit 2.
"""

import pytest

from arb_orchestration.commands import publish

EVENT = ('{"venue":"binance","symbol":"BTC/USDT:USDT","price_change_pct":-1.5,"window_seconds":60,'
         '"severity":"warning","x":%s}')


@pytest.mark.parametrize("value", ["1e400", '"\\ud800"'], ids=["overflow", "surrogate"])
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_a_value_with_no_canonical_form_is_bad_input(monkeypatch, capsys, value, signed):
    monkeypatch.setenv("ARB_EVENT_TOPIC_PREFIX", "")
    if signed:
        monkeypatch.setenv("EVENT_SIGNING_KEY", "review-key")
    else:
        monkeypatch.delenv("EVENT_SIGNING_KEY", raising=False)
    assert publish.main(["--dry-run", "market-events", EVENT % value]) == 2
    err = capsys.readouterr().err
    assert "invalid market-events event: not JSON" in err and "Traceback" not in err
