"""The ``govtune`` command line: checks and helpers around the DVC pipeline.

The pipeline itself runs with ``dvc repro`` (each stage is ``python -m pipeline.<stage>``).
This CLI holds what users run by hand: ``govtune policy lint`` checks ``params.yaml`` and
every policy file against its typed model; ``govtune synthesize`` writes the demo data.

Run: ``govtune --help``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.common.errors import EXIT_USER_ERROR, GovtuneError


def _policy_loaders() -> dict[str, Callable[[Path], object]]:
    """Maps each policy file name to the loader of its typed model."""
    from pipeline.common.policy import load_allowlist, load_data_contract, load_fairness_policy, load_pii_policy

    return {
        "models.yaml": load_allowlist, "data_contract.yaml": load_data_contract, "pii.yaml": load_pii_policy,
        "fairness.yaml": load_fairness_policy,
    }  # fmt: skip


def lint_policies(params_path: Path = Path("params.yaml")) -> list[str]:
    """Validates params.yaml and every known policy file; returns one line per problem."""
    from pipeline.common.params import load_params

    problems: list[str] = []
    try:
        params = load_params(params_path)
        policy_dir = params.base_model.allowlist.parent
    except GovtuneError as exc:
        return [str(exc)]
    for name, loader in _policy_loaders().items():
        try:
            loader(policy_dir / name)
        except GovtuneError as exc:
            problems.append(str(exc))
    return problems


def _cmd_policy_lint(args: argparse.Namespace) -> int:
    problems = lint_policies(args.params)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return EXIT_USER_ERROR
    print("ok: params.yaml and policies/ are valid")
    return 0


def _cmd_synthesize(args: argparse.Namespace) -> int:
    from pipeline import synthesize

    synthesize.main(args.rest)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Builds the argument parser (cheap: no heavy imports)."""
    parser = argparse.ArgumentParser(prog="govtune", description="Governance-first fine-tuning of language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    policy = sub.add_parser("policy", help="work with the rules in policies/")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    lint = policy_sub.add_parser("lint", help="validate params.yaml and every policy file (unknown keys rejected)")
    lint.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    lint.set_defaults(func=_cmd_policy_lint)
    synth = sub.add_parser("synthesize", help="write the demo dataset (see python -m pipeline.synthesize --help)")
    synth.add_argument("rest", nargs=argparse.REMAINDER)
    synth.set_defaults(func=_cmd_synthesize)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``govtune`` console script."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        sys.exit(args.func(args))
    except GovtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
