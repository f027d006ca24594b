"""`teegate keys create/update/show`: a key's limit and policy, set and read from the
command line, and refused when it would be looser than the gateway's own policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from teegate.config import AttestationSettings, UpstreamSettings
from tests.support.cli import cli_config, run

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
MRTD = "ab" * 48
NO_POLICY = {"models": None, "attestation": None, "tpm": None}


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A gateway that accepts UpToDate and OutOfDate, with one upstream, 'devstack'."""
    path = cli_config(
        tmp_path,
        monkeypatch,
        upstreams=(UpstreamSettings(name="devstack", base_url="https://127.0.0.1:9"),),
        attestation=AttestationSettings(allowed_tcb_statuses=("UpToDate", "OutOfDate")),
    )
    run(path, "accounts", "create", "acme")
    return path


def show(config: Path, key_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(run(config, "keys", "show", key_id, "--json"))
    return shown


def created_id(output: str) -> str:
    return output.split()[1]


def test_create_update_and_show_a_key_policy(config: Path, tmp_path: Path) -> None:
    key_id = created_id(
        run(
            config,
            "keys", "create", "--account", "acme", "--rpm", "30", "--tpm", "5000",
            "--models", f"{R1},Qwen/", "--tcb", "UpToDate", "--require-gpu",
        )
    )  # fmt: skip
    shown = show(config, key_id)
    assert shown["rpm"] == 30
    assert shown["policy"]["tpm"] == 5000
    assert shown["policy"]["models"] == [R1, "Qwen/"]
    assert shown["policy"]["attestation"] == {
        "tcb": ["UpToDate"],
        "require_gpu": True,
        "upstreams": None,
        "measurements": None,
        "max_age_s": None,
    }

    measurements = tmp_path / "measurements.json"
    measurements.write_text(json.dumps({"mrtd": [MRTD]}))
    run(
        config,
        "keys", "update", key_id, "--upstream", "devstack",
        "--measurements", str(measurements), "--max-verdict-age", "300",
    )  # fmt: skip
    shown = show(config, key_id)
    assert (shown["rpm"], shown["policy"]["tpm"]) == (30, 5000)
    assert shown["policy"]["models"] == [R1, "Qwen/"]  # not named: kept
    assert shown["policy"]["attestation"] == {
        "tcb": None,
        "require_gpu": False,
        "upstreams": ["devstack"],
        "measurements": {"mrtd": [MRTD]},
        "max_age_s": 300,
    }

    run(
        config,
        "keys", "update", key_id, "--all-models", "--no-attestation-policy", "--no-tpm",
        "--rpm", "5",
    )  # fmt: skip
    shown = show(config, key_id)
    assert (shown["rpm"], shown["policy"]) == (5, NO_POLICY)
    assert key_id in run(config, "keys", "show", key_id)
    [listed] = json.loads(run(config, "keys", "list", "--json"))
    assert listed | {"budgets": []} == shown


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--tcb", "SWHardeningNeeded"], "SWHardeningNeeded"),
        (["--upstream", "elsewhere"], "elsewhere"),
        (["--models", "deep*seek/"], "'*' may only end a prefix"),
    ],
)
def test_a_policy_looser_than_the_gateways_is_refused(
    config: Path, args: list[str], says: str
) -> None:
    key_id = created_id(run(config, "keys", "create", "--account", "acme"))
    output = run(config, "keys", "update", key_id, *args, code=1)
    assert says in output
    assert show(config, key_id)["policy"] == NO_POLICY
    output = run(config, "keys", "create", "--account", "acme", *args, code=1)
    assert says in output
    assert len(json.loads(run(config, "keys", "list", "--json"))) == 1


def test_a_rotated_key_keeps_its_policy(config: Path) -> None:
    old = created_id(
        run(config, "keys", "create", "--account", "acme", "--tpm", "900", "--models", R1)
    )
    new = run(config, "keys", "rotate", old).split("new key ")[1].split(".")[0]
    assert show(config, new)["policy"] == show(config, old)["policy"]
    assert show(config, new)["policy"]["tpm"] == 900


def test_budgets_for_a_key_and_its_account(config: Path) -> None:
    key_id = created_id(run(config, "keys", "create", "--account", "acme", "--budget-usd", "day=5"))
    run(config, "accounts", "budget", "acme", "--budget-usd", "month=100")
    run(config, "keys", "update", key_id, "--budget-usd", "lifetime=0.5")
    budgets = show(config, key_id)["budgets"]
    assert [(b["scope"], b["period"], b["limit"]) for b in budgets] == [
        ("key", "day", "5"),
        ("key", "lifetime", "0.5"),
        ("account", "month", "100"),
    ]
    assert all((b["spent"], b["held"], b["remaining"]) == ("0", "0", b["limit"]) for b in budgets)
    assert "key day budget (USD)" in run(config, "keys", "show", key_id)

    run(config, "keys", "update", key_id, "--budget-usd", "day=none", "--budget-usd", "lifetime=2")
    budgets = show(config, key_id)["budgets"]
    assert [(b["period"], b["limit"]) for b in budgets] == [("lifetime", "2"), ("month", "100")]
    assert "expected day=" in run(
        config, "keys", "update", key_id, "--budget-usd", "week=1", code=1
    )
    finer = run(config, "keys", "update", key_id, "--budget-usd", "day=0.0000000001", code=1)
    assert "finer than 1e-9 USD" in finer
