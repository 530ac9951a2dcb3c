"""The rule engine: read a rule's evidence, compare it with its threshold or baseline, say how it fared.

A rule (:class:`pipeline.common.policy.Rule`) names its evidence as ``source:dotted.path``
(``evaluation:finetuned.quality.category_accuracy.value``); ``*`` fans out over the keys of an
object (one value per group), a number picks an item of a list (``ci95.0``: the low end of an
interval). The gate judges the promotion and privacy rules with it, ``govtune monitor`` the
monitoring rules, so a rule means the same wherever it is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.common.outputs import Malformed, Outcome, Status
from pipeline.common.policy import Rule
from pipeline.common.tracking import TAG


def resolve(evidence: dict[str, Any], path: str) -> dict[str, Any]:
    """Values at ``source:dotted.path``; ``*`` fans out over keys. ``{"": value}`` for one value.

    A number picks an item of a list (``...ci95.0``: the low end of an interval).

    Raises:
        KeyError: with a message naming the missing source or key and the keys that exist.
    """
    source, dotted = path.split(":", 1)
    if source not in evidence:
        raise KeyError(f"missing evidence: source {source!r} was not produced")
    if isinstance(evidence[source], Malformed):
        raise KeyError(f"malformed evidence: {evidence[source]}")
    found: dict[str, Any] = {"": evidence[source]}
    for part in dotted.split("."):
        step: dict[str, Any] = {}
        for key, node in found.items():
            if isinstance(node, list) and part.isdigit():
                if int(part) >= len(node):
                    raise KeyError(f"unknown metric path {path}: item {part} of a list of {len(node)}")
                step[key] = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise KeyError(f"unknown metric path {path}: {'.'.join(filter(None, [key]))} is not an object")
            if part == "*":
                step.update({f"{key}.{k}".strip("."): v for k, v in node.items()})
            elif part in node:
                step[key] = node[part]
            elif isinstance(node.get("error"), str):  # a stage's record of a metric it could not measure
                raise KeyError(f"not measured: {key or source}: {node['error']} (metric path {path})")
            else:
                raise KeyError(f"unknown metric path {path}: no key {part!r} (have: {', '.join(sorted(node)[:12])})")
        found = step
    if not found:
        raise KeyError(f"unknown metric path {path}: `*` matched nothing")
    return found


def holds(observed: Any, comparator: str, target: Any) -> bool:
    """``observed <comparator> target``; booleans only compare with ==."""
    if comparator == "==":
        return (
            observed == target
            if isinstance(target, bool) or isinstance(observed, bool)
            else float(observed) == float(target)
        )
    if isinstance(observed, bool) or not isinstance(observed, int | float):
        raise TypeError(f"observed value {observed!r} is not a number")
    return observed >= target if comparator == ">=" else observed <= target


@dataclass
class RuleResult:
    """How one rule fared."""

    rule: Rule
    result: Outcome
    status: Status
    observed: Any = None
    target: Any = None
    baseline: Any = None
    failing_keys: list[str] = field(default_factory=list)
    message: str = ""
    waiver: dict[str, Any] | None = None

    def __post_init__(self) -> None:  # a word outside the enums is a bug here, not a new status downstream
        self.result = Outcome(self.result)
        self.status = Status(self.status)

    def to_json(self) -> dict[str, Any]:
        r = self.rule
        return {
            "id": r.id, "title": r.title, "description": r.description, "severity": r.severity, "owner": r.owner,
            "controls": r.controls, "evidence": r.evidence, "comparator": r.comparator, "threshold": r.threshold,
            "baseline": None if r.baseline is None else {**r.baseline.model_dump(mode="json"), "value": self.baseline},
            "target": self.target, "observed": self.observed, "failing_keys": self.failing_keys,
            "result": Outcome(self.result).value, "status": Status(self.status).value, "message": self.message, "waiver": self.waiver,
        }  # fmt: skip


def judge_rule(rule: Rule, evidence: dict[str, Any], champion: dict[str, float] | None) -> RuleResult:
    """Evaluates one rule (no waivers yet). ``champion``: the champion's observed values, or None."""
    try:
        observed = resolve(evidence, rule.evidence)
    except KeyError as exc:
        return RuleResult(rule, "error", "error", message=str(exc.args[0]))
    baseline: Any = None
    if rule.baseline is None:
        targets = dict.fromkeys(observed, rule.threshold)
    elif rule.baseline.against == "champion":
        if champion is None or rule.id not in champion:
            message = (
                "no champion yet: nothing to compare with"
                if champion is None
                else "the champion has no value for this rule"
            )
            return RuleResult(rule, "pass", "passed", observed=flat(observed), message=message)
        baseline = champion[rule.id]
        targets = {"": _shift(baseline, rule)}
    else:
        try:
            base_values = resolve(evidence, rule.baseline.evidence or "")
        except KeyError as exc:
            return RuleResult(rule, "error", "error", observed=flat(observed), message=f"baseline: {exc.args[0]}")
        if set(base_values) != set(observed):
            return RuleResult(
                rule,
                "error",
                "error",
                observed=flat(observed),
                message=f"baseline keys {sorted(base_values)} differ from {sorted(observed)}",
            )
        baseline = flat(base_values)
        targets = {k: None if v is None else _shift(v, rule) for k, v in base_values.items()}
    failing, problems = [], []
    for key, value in observed.items():
        if value is None or targets[key] is None:
            problems.append(f"{key or rule.evidence}: no value (too few examples?)")
            continue
        try:
            if not holds(value, rule.comparator, targets[key]):
                failing.append(key)
        except (TypeError, ValueError) as exc:
            problems.append(f"{key or rule.evidence}: {exc}")
    target = flat(targets) if rule.baseline is not None else rule.threshold
    if problems:
        return RuleResult(rule, "error", "error", flat(observed), target, baseline, failing, "; ".join(problems))
    if not failing:
        return RuleResult(rule, "pass", "passed", flat(observed), target, baseline)
    status = "failed" if rule.severity == "blocking" else "warning"
    shown = ", ".join(f"{k}={observed[k]}" if k else f"{observed[k]}" for k in failing)
    return RuleResult(
        rule, "fail", status, flat(observed), target, baseline, failing, f"{shown} not {rule.comparator} {target}"
    )


def _shift(value: float, rule: Rule) -> float:
    """The target a baseline sets: worse by at most max_regression in the rule's direction."""
    allowed = rule.baseline.max_regression if rule.baseline else 0.0
    return round(value - allowed if rule.comparator == ">=" else value + allowed, 10)


def flat(values: dict[str, Any]) -> Any:
    """One value as itself; several (from a ``*``) as ``{key: value}``."""
    return values[""] if set(values) == {""} else values


def champion_values(version: Any | None) -> dict[str, float] | None:
    """The observed values the champion was judged on (tags ``govtune.observed.<rule>``)."""
    if version is None:
        return None
    prefix = f"{TAG}observed."
    out = {}
    for key, value in version.tags.items():
        if key.startswith(prefix):
            try:
                out[key[len(prefix) :]] = float(value)
            except ValueError:
                continue
    return out
