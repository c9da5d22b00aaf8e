"""The code location with `EXCHANGE_BACKEND=ccxt`: it loads without importing ccxt (nothing slow at
import), and `dagster definitions validate` passes in `prod` with ccxt venues configured from
environment variables, without the credentials showing up in its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from arb_orchestration import settings

KEY, SECRET = "ccxt-test-key-7f3a9c2e", "ccxt-test-secret-0b8d41e6aa"


def _prod_env() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    # Every non-secret setting prod requires, with a plausible production value.
    values = {
        "WISE_API_URL": "https://api.transferwise.com",
        "WISE_PROFILE_ID": "12345",
        "KAFKA_BOOTSTRAP_SERVERS": "kafka-0.kafka:9093",
        "SMTP_HOST": "smtp.example.com",
        "SMTP_PORT": "587",
        "SMTP_SENDER": "arb@example.com",
        "RISK_TEAM_EMAILS": "risk@example.com",
        "EXCHANGE_SIM_URL": "http://127.0.0.1:8701",
    }
    for name, setting in settings.SETTINGS.items():
        if setting.prod_required and not setting.secret and "<" not in name:
            env[name] = values.get(name) or setting.local_default or "x"
    env.update(
        {
            "DAGSTER_DEPLOYMENT": "prod",
            "EXCHANGE_BACKEND": "ccxt",
            "EXCHANGE_VENUES": "binance,okx",
            "CCXT_VENUES": json.dumps(
                {
                    "binance": {"exchange_id": "binanceusdm", "symbols": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
                                "withdraw_allowlist": ["TXYZexampleaddress"]},
                    "okx": {"exchange_id": "okx", "read_only": True},
                }
            ),
            "CCXT_BINANCE_API_KEY": KEY,
            "CCXT_BINANCE_SECRET": SECRET,
            "CCXT_OKX_API_KEY": KEY + "-okx",
            "CCXT_OKX_SECRET": SECRET + "-okx",
            "CCXT_OKX_PASSWORD": "okx-passphrase-xyz",
            "WISE_API_TOKEN": "wise-token-abc",
            "EVENT_SIGNING_KEY": "signing-key-def",
        }
    )
    return env


def test_loading_the_code_location_does_not_import_ccxt():
    script = (
        "import sys\n"
        "import arb_orchestration.definitions as d\n"
        "exchange = d.defs.resources['exchange']\n"
        "print(type(exchange).__name__, exchange.venue_names(), 'ccxt' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=_prod_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "CcxtExchangeResource ['binance', 'okx'] False"


def test_definitions_validate_passes_in_prod_with_ccxt_venues_from_the_environment():
    env = _prod_env()
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "arb_orchestration.definitions"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Validation successful" in output
    for secret in (KEY, SECRET, "okx-passphrase-xyz", "wise-token-abc", "signing-key-def"):
        assert secret not in output

