"""The paper's claims (minicnn.study.claims) checked on synthetic result tables: the paper-shaped table
confirms the headline claims, tables shaped otherwise refute them, absent rows make them not testable."""

from __future__ import annotations

import re

from minicnn.study.claims import CLAIMS, CONFIRMED, NOT_CONFIRMED, NOT_TESTABLE, VERDICTS, evaluate_claims

from synthetic_results import by_id, make_rows, paper_like, scaled


def test_the_table_of_claims():
    assert [c.cid for c in CLAIMS] == [f"C{i:02d}" for i in range(1, 40)]
    assert len({c.check for c in CLAIMS}) == len(CLAIMS)  # each claim its own check
    for claim in CLAIMS:
        assert claim.section and claim.text and claim.tolerance, claim.cid
        assert not re.fullmatch(r"_?c\d+", claim.check.__name__), claim.check.__name__  # a name that says what


def test_every_claim_has_section_tolerance_and_a_verdict():
    claims = evaluate_claims(make_rows(seeds=(0,)))
    assert [c["id"] for c in claims] == [c.cid for c in CLAIMS]
    for c in claims:
        assert c["section"] and c["tolerance"] and c["verdict"] in VERDICTS and c["measurement"] != "-"
    # the paper-shaped table confirms the paper's headline claims
    got = by_id(claims)
    for cid in ("C02", "C03", "C07", "C08", "C09", "C12", "C14", "C17", "C23", "C24", "C26", "C31",
                "C32", "C35", "C37", "C39"):
        assert got[cid]["verdict"] == CONFIRMED, got[cid]


def test_lr_001_best_confirmed_and_refuted():
    best = by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=scaled({0.8: 0.5, 0.01: 1.0, 0.0001: 0.5}))))
    for cid in ("C07", "C14", "C24", "C37"):
        assert best[cid]["verdict"] == CONFIRMED, best[cid]
        assert "lr 0.01" in best[cid]["measurement"]

    def low_lr_wins(schedule, method, lr, a):
        before, after, train = paper_like(schedule, method, lr, a)
        return (before, 0.9, 0.9) if lr == 0.0001 else (before, after, train)

    worse = by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=low_lr_wins)))
    for cid in ("C07", "C14", "C24", "C37"):
        assert worse[cid]["verdict"] == NOT_CONFIRMED, worse[cid]
        assert "lr 0.0001 is better" in worse[cid]["reason"]


def test_stuck_at_chance_after_30_percent():
    def flat(schedule, method, lr, a):
        return 0.5, 0.5, 0.52

    def stuck(schedule, method, lr, a):
        return (0.5, 0.1, 0.1) if a > 0.3 else (0.5, 0.55, 0.57)

    stuck_claims = by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=stuck)))
    assert stuck_claims["C03"]["verdict"] == CONFIRMED
    assert stuck_claims["C02"]["verdict"] == CONFIRMED
    flat_claims = by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=flat)))
    assert flat_claims["C03"]["verdict"] == NOT_CONFIRMED
    assert flat_claims["C02"]["verdict"] == NOT_CONFIRMED


def test_recovery_at_99_percent_and_overfitting_claims():
    def recovers(schedule, method, lr, a):
        if a == 0.99:
            return 0.10, 0.30, 0.30
        return 0.5, 0.55, 0.55

    def no_recovery(schedule, method, lr, a):
        return (0.10, 0.12, 0.12) if a == 0.99 else (0.5, 0.55, 0.65)

    yes, no = (by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=f))) for f in (recovers, no_recovery))
    assert yes["C08"]["verdict"] == CONFIRMED and yes["C35"]["verdict"] == CONFIRMED
    assert no["C08"]["verdict"] == NOT_CONFIRMED and no["C35"]["verdict"] == NOT_CONFIRMED
    assert "every conv filter" in no["C08"]["reason"]  # structured at 99%: 10 effective parameters left
    assert yes["C09"]["verdict"] == CONFIRMED  # train == test: no overfitting
    assert no["C09"]["verdict"] == NOT_CONFIRMED  # 10-point gap
    assert no["C22"]["verdict"] == CONFIRMED


def test_iterative_versus_one_shot():
    def iterative_better(schedule, method, lr, a):
        before, after, train = paper_like("oneshot", method, lr, a)
        return (before, min(after + 0.1, 1.0), train) if schedule == "iterative" else (before, after, train)

    def iterative_worse(schedule, method, lr, a):
        before, after, train = paper_like("oneshot", method, lr, a)
        return (before, after * 0.5, train) if schedule == "iterative" else (before, after, train)

    good = by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=iterative_better)))
    bad = by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=iterative_worse)))
    assert good["C19"]["verdict"] == CONFIRMED and good["C20"]["verdict"] == CONFIRMED
    assert bad["C19"]["verdict"] == NOT_CONFIRMED and bad["C20"]["verdict"] != CONFIRMED


def test_iterative_structured_about_40_percent_at_99():
    def at(value):
        def accuracy(schedule, method, lr, a):
            before, after, train = paper_like(schedule, method, lr, a)
            return (before, value, value) if a == 0.99 else (before, after, train)
        return accuracy

    assert by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=at(0.42))))["C26"]["verdict"] == CONFIRMED
    assert by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=at(0.10))))["C26"]["verdict"] == NOT_CONFIRMED


def test_missing_amount_makes_claim_not_testable():
    rows = [r for r in make_rows(seeds=(0,)) if r.amount != 0.99]
    claims = by_id(evaluate_claims(rows))
    assert claims["C26"]["verdict"] == NOT_TESTABLE and "99%" in claims["C26"]["reason"]
    assert claims["C07"]["verdict"] != NOT_TESTABLE


def test_missing_schedule_makes_its_claims_not_testable():
    claims = by_id(evaluate_claims(make_rows(schedules=("oneshot",), seeds=(0,))))
    assert claims["C23"]["verdict"] == NOT_TESTABLE
    assert "no rows for iterative structured, lr 0.8" in claims["C23"]["reason"]
    assert claims["C19"]["verdict"] == NOT_TESTABLE
    assert claims["C07"]["verdict"] != NOT_TESTABLE


def test_claims_use_the_layerwise_rows_unless_told():
    def global_refutes(schedule, method, lr, a):
        before, after, train = paper_like(schedule, method, lr, a)
        return (before, 0.9, 0.9) if lr == 0.0001 else (before, after, train)

    rows = make_rows(seeds=(0,)) + make_rows(seeds=(0,), scope="global", accuracy=global_refutes)
    assert by_id(evaluate_claims(rows))["C07"]["verdict"] == CONFIRMED
    assert by_id(evaluate_claims(rows, "global"))["C07"]["verdict"] == NOT_CONFIRMED
