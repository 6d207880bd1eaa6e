"""The one worker-pool runner: each caller's failure rule, in-process and in worker processes."""

import pytest

from starmd.errors import StarmdInputError, StarmdSimulationError
from starmd.workers import run_jobs


def _fail_on_b(name):
    if name == "b":
        raise StarmdSimulationError("b exploded")
    return name.upper()


def _bug_on_b(name):
    if name == "b":
        raise ZeroDivisionError("a bug, not bad input")
    return name.upper()


@pytest.mark.parametrize("workers", [1, 2])
def test_record_rule_lets_the_other_jobs_finish(workers):
    seen = {}
    failures = run_jobs(
        _fail_on_b,
        ["a", "b", "c"],
        workers,
        on_failure="record",
        on_done=lambda job, result, error: seen.update({job: (result, error)}),
    )
    assert failures == [("b", "b exploded")]
    assert seen == {"a": ("A", None), "b": (None, "b exploded"), "c": ("C", None)}


@pytest.mark.parametrize("workers", [1, 2])
def test_record_rule_still_stops_at_a_bug(workers):
    with pytest.raises(ZeroDivisionError, match="a bug"):
        run_jobs(_bug_on_b, ["a", "b", "c"], workers, on_failure="record")


@pytest.mark.parametrize("workers", [1, 2])
def test_raise_rule_stops_at_the_first_failure(workers):
    done = []
    with pytest.raises(StarmdSimulationError, match="b exploded"):
        run_jobs(
            _fail_on_b,
            ["b", "a"] if workers == 1 else ["a", "b", "c"],
            workers,
            on_failure="raise",
            on_done=lambda job, result, error: done.append(job),
        )
    if workers == 1:
        assert done == []  # in-process: nothing after the failing job runs


def test_poll_runs_while_workers_run_and_at_the_end():
    polls = []
    run_jobs(_fail_on_b, ["a", "c"], 2, on_failure="raise", poll=lambda: polls.append(1))
    assert len(polls) >= 2


def test_bad_worker_counts_and_rules_are_refused():
    with pytest.raises(StarmdInputError, match="--workers 0"):
        run_jobs(_fail_on_b, ["a"], 0, on_failure="raise")
    with pytest.raises(ValueError, match="on_failure"):
        run_jobs(_fail_on_b, ["a"], 1, on_failure="ignore")
