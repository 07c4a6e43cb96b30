"""The FinOps Foundation's own FOCUS validator (focus-validator 2.2.1, FOCUS 1.2, rule model 1.2.0.1) run on a
CSV file: one way to find it, to say why it is missing, to run it and to read its verdict.

It lives in .venv-focus (Python >= 3.12, `make test` builds it from requirements/focus-validator.txt) and runs
offline: the rule model bundled in the package, never a download. Its exit status is 0 whatever the verdict, so
the verdict is read from its console report: the summary line (`Total: N | Pass: N | Fail: N | Skipped: N`),
one line per rule (`<icon> <RuleId>: PASS|FAIL|SKIPPED  (...)`) and a failures section
(`- <RuleId>: violations=N; <message>` then `  MustSatisfy: <the spec's sentence>`).

One failure is not a defect of the file: where the model says "X is null, OR X is not null" (InvoiceId-C-003-C),
the validator runs both alternatives as rules of their own and reports the one the file did not take as failed,
while the OR itself passes. `FocusResult.blocking` leaves out exactly those failures: a failed rule that is an
alternative of an OR rule that passed. Everything else that fails is blocking.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-focus"
EXECUTABLE = VENV / "bin" / "focus-validator"
RULES_VERSION = "1.2.0.1"  # the FOCUS 1.2 rule model focus-validator 2.2.1 ships (rules/model-1.2.0.1.json)
LOGGING_CONFIG = Path(__file__).with_name("focus_logging.yaml")

# The provider capabilities (the model's ApplicabilityCriteria) a costcontrol export claims. Rules behind a
# criterion are skipped unless it is named; the validator applies a rule when ANY of its criteria is named.
COSTCONTROL_CRITERIA = (
    "ACCOUNT_NAMING_SUPPORTED",  # BillingAccountName is never null
    "USAGE_MEASUREMENT_SUPPORTED",  # ConsumedQuantity / ConsumedUnit (tokens, GPU hours)
    "UNIT_PRICING_SUPPORTED",  # SkuId, SkuPriceId, SkuMeter, SkuPriceDetails
    "PUBLIC_PRICE_LIST_SUPPORTED",  # ListUnitPrice x PricingQuantity = ListCost (brings PricingCurrency* along)
    "NEGOTIATED_PRICING_SUPPORTED",  # ContractedUnitPrice x PricingQuantity = ContractedCost
    "TAGGING_SUPPORTED",  # Tags as a JSON object
    "BILLING_BASED_ON_PROVISIONED_RESOURCES_SUPPORTED",  # ResourceId / ResourceName (GPUs)
    "RESOURCE_TYPE_ASSIGNMENT_SUPPORTED",  # ResourceType
)

_RULE_ID = r"[A-Za-z]+-[A-Z]-\d{3}-[A-Z]"
_SUMMARY = re.compile(r"^Total: (\d+) \| Pass: (\d+) \| Fail: (\d+) \| Skipped: (\d+)$", re.MULTILINE)
_STATUS = re.compile(rf"^\S+ ({_RULE_ID}): (PASS|FAIL|SKIPPED)\b", re.MULTILINE)
_FAILURE = re.compile(rf"^- ({_RULE_ID}): violations=([^;]*); (.*)$")


def package_dir() -> Path | None:
    """The installed focus_validator package in .venv-focus, or None."""
    found = sorted(VENV.glob("lib/python3.*/site-packages/focus_validator"))
    return found[-1] if found else None


def missing_validator() -> str:
    """Why the validator cannot run here, or "" when it can."""
    if not (os.access(EXECUTABLE, os.X_OK) and package_dir()):
        return f"no FOCUS validator: {VENV.relative_to(ROOT)} is missing; `make test` (or `make focus-venv`) builds it"
    return ""


@dataclass(frozen=True)
class FocusFailure:
    rule_id: str
    violations: str  # a count, or "?" where the validator gives none
    message: str
    must_satisfy: str  # the spec's sentence the rule checks


@dataclass(frozen=True)
class FocusResult:
    total: int
    passed: int
    failed: int
    skipped: int
    statuses: dict[str, str]  # rule id -> "PASS" | "FAIL" | "SKIPPED", every rule the validator reported
    failures: tuple[FocusFailure, ...]  # as listed in its failures section
    blocking: tuple[FocusFailure, ...]  # the failures that are not an untaken alternative of a passing OR
    output: str  # the console report, for assertion messages
    seconds: float

    @property
    def ok(self) -> bool:
        """The file conforms: rules ran, and none failed except untaken OR alternatives."""
        return self.passed > 0 and not self.blocking

    @property
    def failed_rule_ids(self) -> list[str]:
        return [failure.rule_id for failure in self.failures]

    @property
    def blocking_rule_ids(self) -> list[str]:
        return [failure.rule_id for failure in self.blocking]

    def explain(self) -> str:
        """The blocking failures, one per line, for an assertion message."""
        return "\n".join(f"{f.rule_id}: {f.message} [{f.must_satisfy}]" for f in self.blocking) or "(none)"


def focus_validate(
    csv_path: str | Path, *, criteria: Sequence[str] = (), timeout: float = 180, show_violations: bool = True
) -> FocusResult:
    """Run focus-validator on `csv_path` against FOCUS 1.2 (CostAndUsage), offline, and read its verdict.

    `criteria`: applicability criteria to claim (see COSTCONTROL_CRITERIA); none skips every conditional rule.
    Raises RuntimeError when the validator crashes or prints no summary."""
    package = package_dir()
    if missing_validator() or package is None:
        raise RuntimeError(missing_validator())
    command = [
        str(EXECUTABLE),
        "--data-file",
        str(Path(csv_path).resolve()),
        "--validate-version",
        RULES_VERSION,
        "--block-download",
        "--focus-dataset",
        "CostAndUsage",
        "--output-type",
        "console",
    ]
    if criteria:
        command += ["--applicability-criteria", ",".join(criteria)]
    if show_violations:
        command.append("--show-violations")
    # It opens focus_validator/rules/currency_codes.csv relative to the working directory, and by default
    # logs at DEBUG to a file there: run it from site-packages, with our logging config (warnings to stderr).
    env = {**os.environ, "LOGGING_CONFIG": str(LOGGING_CONFIG), "PYTHONIOENCODING": "utf-8"}
    started = time.monotonic()
    completed = subprocess.run(
        command, cwd=package.parent, env=env, capture_output=True, text=True, encoding="utf-8", timeout=timeout
    )
    seconds = time.monotonic() - started
    output = completed.stdout
    summary = _SUMMARY.search(output)
    if completed.returncode != 0 or summary is None:
        raise RuntimeError(
            f"focus-validator exited {completed.returncode} without a summary\n"
            f"stdout:\n{output[-4000:]}\nstderr:\n{completed.stderr[-4000:]}"
        )
    total, passed, failed, skipped = (int(group) for group in summary.groups())
    statuses = dict(_STATUS.findall(output))
    failures = _failures(output)
    alternatives = _or_alternatives()
    blocking = tuple(
        failure
        for failure in failures
        if not any(statuses.get(parent) == "PASS" for parent in alternatives.get(failure.rule_id, ()))
    )
    return FocusResult(total, passed, failed, skipped, statuses, failures, blocking, output, seconds)


def _failures(output: str) -> tuple[FocusFailure, ...]:
    _, _, section = output.partition("\n--- Failures ---\n")
    failures: list[FocusFailure] = []
    for line in section.splitlines():
        if match := _FAILURE.match(line):
            failures.append(FocusFailure(match[1], match[2].strip(), match[3].strip(), ""))
        elif line.startswith("  MustSatisfy: ") and failures:
            failures[-1] = replace(failures[-1], must_satisfy=line.removeprefix("  MustSatisfy: "))
    return tuple(failures)


@cache
def _or_alternatives() -> dict[str, tuple[str, ...]]:
    """Rule id -> the OR rules that name it as one alternative, from the rule model the validator runs."""
    package = package_dir()
    assert package is not None
    model = json.loads((package / "rules" / f"model-{RULES_VERSION}.json").read_text(encoding="utf-8"))
    parents: dict[str, list[str]] = {}
    for rule_id, rule in model["ModelRules"].items():
        requirement = rule.get("ValidationCriteria", {}).get("Requirement", {})
        if requirement.get("CheckFunction") != "OR":
            continue
        for item in requirement.get("Items", ()):
            if item.get("CheckFunction") == "CheckModelRule":
                parents.setdefault(item["ModelRuleId"], []).append(rule_id)
    return {child: tuple(ors) for child, ors in parents.items()}
