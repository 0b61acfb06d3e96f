"""Every strategy, alone and with replay, against every invariant in models.checks."""

from collections.abc import Callable
from functools import partial

import pytest

from models.checks import CHECKS, Subject, check_strategy
from models.strategies import STRATEGY_NAMES, UNREGULARISED, make_strategy, parse_strategy

SPECS = [*STRATEGY_NAMES, *(f"{name}+replay" for name in STRATEGY_NAMES)]




def subject(spec: str) -> Subject:
    name, replay = parse_strategy(spec)
    return Subject(partial(make_strategy, name), regularises=name not in UNREGULARISED,
                   replay=replay)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("spec", SPECS)
def test_strategy_keeps_the_invariant(spec: str, check: Callable[[Subject], None]) -> None:
    check(subject(spec))


def test_check_strategy_runs_every_check_and_catches_a_broken_strategy() -> None:
    check_strategy(partial(make_strategy, "online-ewc"))

    def broken() -> object:  # its penalty's gradient points away from the anchor
        s = make_strategy("online-ewc")
        s.scale = -1.0
        return s

    with pytest.raises(AssertionError):
        check_strategy(broken)  # type: ignore[arg-type]
