"""Every result the paper states, as data: an id, the paper's section, the claim in the paper's words,
the tolerance it is checked with, and the named check that measures it (``CLAIMS``).

``evaluate_claims(rows)`` runs every check on the curves of one scope (``minicnn.study.curves``): the
layerwise rows when there are any (the paper prunes each tensor separately), else the one scope present.
A claim whose rows are absent is "not testable" and names what is missing, so a partial sweep still
gets a verdict for every claim. The checks are in ``oneshot`` (Sections 1.2 and 2) and ``iterative``
(Section 3); what they measure (fall, collapse, steepest step, gaps...) and the tolerances are in
``measures``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from minicnn.study.claims import iterative, oneshot
from minicnn.study.claims.measures import (ABOUT, CONFIRMED, DECENT, FALL, FAR, GAP, NO_EFFECTIVE, NOT_CONFIRMED,
                                           NOT_TESTABLE, PARTLY, R2_LINEAR, RECOVER, SIMILAR, SLIGHT_GAP, SLOW_STEP,
                                           STEEPER, TIE, UNDERFIT, VERDICTS, WINDOW, CurveSet, Outcome, pct)
from minicnn.study.curves import MissingRows, curves_for_scope

__all__ = ["CLAIMS", "CONFIRMED", "Claim", "NOT_CONFIRMED", "NOT_TESTABLE", "PARTLY", "VERDICTS", "evaluate_claims"]


@dataclass(frozen=True)
class Claim:
    cid: str
    section: str
    text: str
    tolerance: str
    check: Callable[[CurveSet], Outcome]


# Tolerances shared by several claims.
_LR_001_BEST = f"mean test acc after at lr 0.01 >= that at lr 0.8 and at lr 0.0001 minus {100 * TIE:.0f} pt"
_RECOVERS_AT_99 = (f"at 99%: test acc before <= 15% and fine-tuning gains >= {100 * RECOVER:.0f} pts (partly: >= "
                   f"{50 * RECOVER:.0f} pts, or the full gain from above 15%)")
_LR_00001_ABOVE_LR_08 = f"mean test acc after at lr 0.0001 > that at lr 0.8 + {100 * TIE:.0f} pt"
_FALL = f"fall (first amount > {100 * FALL:.0f} pts below the unpruned accuracy)"

CLAIMS: list[Claim] = [
    # ------------------------------------------------------------------ 1.2 and 2.1: one-shot structured
    Claim("C01", "1.2", "The baseline (8 conv kernels, batch 512, lr 0.8) is what \"ran decently well\".",
          f"baseline test accuracy (amount 0, before fine-tuning) >= {pct(DECENT)} (the paper gives no number)",
          oneshot.baseline_ran_decently),
    Claim("C02", "2.1.1", "One-shot structured, lr 0.8: \"a huge dip down to an accuracy of 10% after removing more "
          "than 30% of the parameters\".",
          "first amount with test acc after <= 15% lies in (30%, 50%]; partly if the dip to ~10% happens at another "
          "amount",
          oneshot.oneshot_structured_lr08_dips_to_chance),
    Claim("C03", "2.1.1", "One-shot structured, lr 0.8: \"The model seems to get stuck after 30% of the parameters are "
          "removed\" (fine-tuning leaves it at ~10%).",
          "test acc after <= 15% at every amount above 30% (partly: at least half of them)",
          oneshot.oneshot_structured_lr08_stuck_after_30),
    Claim("C04", "2.1.1", "One-shot structured: at lr 0.0001 \"there was not such a steep drop off of accuracy\" as at "
          "lr 0.8; \"the drop of accuracy also happened a less aggressive manner\".",
          f"largest decrease between neighbouring amounts at lr 0.0001 smaller than at lr 0.8 by >= "
          f"{100 * STEEPER:.0f} pts",
          oneshot.oneshot_structured_low_lr_drops_less_steeply),
    Claim("C05", "2.1.1", "One-shot structured, lr 0.0001: the model \"was able to gain some accuracy from where it "
          "started\" (fine-tuning raises test accuracy above its value right after pruning).",
          f"mean (after - before) over pruned amounts >= {100 * TIE:.0f} pt; partly if > 0",
          oneshot.oneshot_structured_lr00001_gains_from_fine_tuning),
    Claim("C06", "2.1.1", "Structured pruning: \"Kernels being wiped out entirely could also completely mess up the "
          "model\".",
          f"every structured row with < {100 * NO_EFFECTIVE:.0f}% of the parameters still effective (all conv "
          f"filters removed) has test acc after <= 15% (partly: at least half)",
          oneshot.structured_without_filters_is_at_chance),
    Claim("C07", "2.1.2", "One-shot structured: \"the learning rate of .01 seems to be the best out of the 3 "
          "chosen\".",
          _LR_001_BEST, oneshot.oneshot_structured_lr001_is_best),
    Claim("C08", "2.1.2", "One-shot structured, lr 0.01: \"a good recovery from an initial test accuracy of 10% at a "
          "pruning amount of 99%\".",
          _RECOVERS_AT_99, oneshot.oneshot_structured_lr001_recovers_at_99),
    Claim("C09", "2.1.2", "One-shot structured, lr 0.01: \"The models seem to not be overfitting either, as the "
          "training accuracy and the test accuracy after training seem to be pretty similar as more parameters are "
          "pruned\".",
          f"|train acc - test acc after| <= {100 * GAP:.0f} pts at every amount; partly if only at amounts >= 50%",
          oneshot.oneshot_structured_lr001_does_not_overfit),
    Claim("C10", "2.1.3", "One-shot structured, lr 0.0001: \"the models are not overfitting or underfitting\".",
          f"not overfitting: train - test gap <= {100 * GAP:.0f} pts at every amount; not underfitting: mean train "
          f"acc at most {100 * UNDERFIT:.0f} pts below that at lr 0.01",
          oneshot.oneshot_structured_lr00001_neither_over_nor_underfits),
    Claim("C11", "2.1.3", "One-shot structured, lr 0.0001 \"is not the best it is not the worst either\": below lr "
          "0.01 (\"the accuracy is not there when compared\") but not below lr 0.8.",
          f"mean test acc after: lr 0.0001 < lr 0.01 - {100 * TIE:.0f} pt, and lr 0.0001 >= lr 0.8 - "
          f"{100 * TIE:.0f} pt",
          oneshot.oneshot_structured_lr00001_between_the_others),
    # -------------------------------------------------------------------------- 2.2: one-shot unstructured
    Claim("C12", "2.2.1", "One-shot, lr 0.8: unstructured pruning shows \"a drop off in accuracy in a much later "
          "stage in the pruning\" than structured.",
          f"{_FALL} at least 20 pts of amount later for unstructured; partly if later by less",
          oneshot.oneshot_unstructured_falls_later_than_structured),
    Claim("C13", "2.2.1", "One-shot: unstructured pruning is \"a far less aggressive way to prune the model\" than "
          "structured.",
          f"mean test acc right after pruning (before fine-tuning) over pruned amounts, all learning rates: "
          f"unstructured >= structured + {100 * FAR:.0f} pts; partly if higher by less",
          oneshot.oneshot_unstructured_is_less_aggressive),
    Claim("C14", "2.2.2", "One-shot unstructured: \"models trained with a learning rate of .01 performed better when "
          "being pruned then at the other learning rates\" (also 2.2.3: .01 is the \"middle ground\").",
          _LR_001_BEST, oneshot.oneshot_unstructured_lr001_is_best),
    Claim("C15", "2.2.2", "One-shot unstructured, lr 0.01: \"The accuracy drop when compared the amount of pruning is "
          "'minimal' when compared to the other rates\".",
          f"mean drop (unpruned accuracy - test acc after) over pruned amounts is the smallest of the three "
          f"learning rates (tie {100 * TIE:.0f} pt) and <= {100 * FALL:.0f} pts; partly if only one holds",
          oneshot.oneshot_unstructured_lr001_drops_least),
    Claim("C16", "2.2.2", "One-shot unstructured, lr 0.01: \"the training and testing accuracies converge\" as more "
          "is pruned.",
          f"|train - test gap| at amounts >= 90% <= {100 * GAP:.0f} pts and no larger than at amounts <= 30%; "
          "partly if they were never apart",
          oneshot.oneshot_unstructured_lr001_train_and_test_converge),
    Claim("C17", "2.2.3", "One-shot unstructured, lr 0.0001: \"a fall in accuracy around ... the middle of the chart, "
          "when about half of the parameters are missing\".",
          f"{_FALL} within 50% +- {100 * WINDOW:.0f}%",
          oneshot.oneshot_unstructured_lr00001_falls_at_half),
    Claim("C18", "2.2.3", "One-shot unstructured: \"if we go too high, we see a sharp decline in accuracy, and if we "
          "go too low, the decline isn't at sharp but it happens over a longer period\" (lr 0.8 vs 0.0001).",
          f"steepest step at lr 0.8 >= that at lr 0.0001 + {100 * STEEPER:.0f} pts, and lr 0.0001 declines (by "
          f">= {100 * STEEPER:.0f} pts) over at least as many neighbouring steps; partly if one holds",
          oneshot.oneshot_unstructured_high_lr_sharp_low_lr_gradual),
    # ---------------------------------------------------------------------- 3 and 3.1: iterative structured
    Claim("C19", "3", "Iterative pruning: \"the results are either better or similar to one shot pruning\".",
          f"for every method x lr, mean test acc after (iterative - one-shot) >= -{100 * SIMILAR:.0f} pts; partly "
          "if for at least half",
          iterative.iterative_better_or_similar),
    Claim("C20", "3", "\"Iterative pruning proved to be a better approach ... in terms of accuracy and accuracy drop "
          "off\".",
          f"in more than half of the method x lr pairs iterative has a higher mean test acc after (by > "
          f"{100 * TIE:.0f} pt), and in more than half its fall comes no earlier; partly if one holds",
          iterative.iterative_more_accurate_and_falls_later),
    Claim("C21", "3.1.1", "Structured, lr 0.8: \"with the one-shot method, the accuracy drop off was sooner and much "
          "more drastic\" than with iterative pruning.",
          f"one-shot falls at a smaller amount, and its steepest step is >= {100 * STEEPER:.0f} pts larger; partly "
          "if one holds",
          iterative.structured_lr08_oneshot_falls_sooner_and_harder),
    Claim("C22", "3.1.1", "Iterative structured, lr 0.8: \"the model is overfitting\".",
          f"train - test gap > {100 * GAP:.0f} pts at some amount where test acc after is above ~10%",
          iterative.iterative_structured_lr08_overfits),
    Claim("C23", "3.1.1", "Iterative structured, lr 0.8: \"converges down to 10% accuracy after about half of the "
          "parameters are removed\".",
          f"collapse (first amount from which test acc after stays <= 15%) within 50% +- {100 * WINDOW:.0f}%",
          iterative.iterative_structured_lr08_collapses_at_half),
    Claim("C24", "3.1.2", "Iterative structured: \"We continue to see the trend of a middle ground learning rate "
          "which was .01\".",
          _LR_001_BEST, iterative.iterative_structured_lr001_is_best),
    Claim("C25", "3.1.2", "Iterative structured, lr 0.01: \"allows the model to retain some accuracy even after "
          "loosing 99% of all parameters, which includes all the kernels\".",
          "test acc after at 99% above 15%", iterative.iterative_structured_lr001_keeps_accuracy_at_99),
    Claim("C26", "3.1.2", "Iterative structured, lr 0.01: \"an accuracy of about 40% at 99% of parameters "
          "removed\".",
          f"test acc after at 99% within 40% +- {100 * ABOUT:.0f} pts",
          iterative.iterative_structured_lr001_about_40_at_99),
    Claim("C27", "3.1.2", "Iterative structured, lr 0.01: \"The model also goes from slightly overfitting to having "
          "similar training and test accuracies towards the end\".",
          f"mean train - test gap at amounts <= 30% in ({100 * SLIGHT_GAP[0]:.0f}, {100 * SLIGHT_GAP[1]:.0f}] pts "
          f"and |gap| at amounts >= 90% <= {100 * GAP:.0f} pts; partly if one holds",
          iterative.iterative_structured_lr001_overfitting_fades),
    Claim("C28", "3.1.3", "Iterative structured: \"the lower the rate gets the closer the accuracy declines at a "
          "linear rate with the removal of parameters\" (lr 0.0001 closest to linear).",
          f"straight-line fit of test acc after vs amount at lr 0.0001 has R^2 >= {R2_LINEAR} with negative slope, "
          "and its R^2 is the highest of the three rates; partly if one holds",
          iterative.iterative_structured_lr00001_declines_linearly),
    Claim("C29", "3.1.3", "Iterative structured: lr 0.0001 is \"not completely tanking the accuracy like something "
          "with a high learning rate\".",
          _LR_00001_ABOVE_LR_08, iterative.iterative_structured_lr00001_beats_lr08),
    # ---------------------------------------------------------------------------- 3.2: iterative unstructured
    Claim("C30", "3.2.1", "Iterative unstructured, lr 0.8: \"We start seeing much better results than any of the "
          "other examples before\" (all one-shot runs and iterative structured).",
          f"mean test acc after higher than each earlier configuration by > {100 * TIE:.0f} pt; partly if than at "
          "least half",
          iterative.iterative_unstructured_lr08_beats_earlier_runs),
    Claim("C31", "3.2.1", "Iterative unstructured, lr 0.8: \"The sharp drop-off ... isn't happening until around 70% "
          "of the parameters have been pruned\".",
          f"{_FALL} within 70% +- {100 * WINDOW:.0f}%; partly if later",
          iterative.iterative_unstructured_lr08_falls_at_70),
    Claim("C32", "3.2.1", "Iterative unstructured, lr 0.8: \"at 95% of the parameters being removed, we observe a "
          "training and testing accuracy of 40%\".",
          f"train acc and test acc after at 95% each within 40% +- {100 * ABOUT:.0f} pts; partly if one",
          iterative.iterative_unstructured_lr08_about_40_at_95),
    Claim("C33", "3.2.2", "Iterative unstructured, lr 0.01: \"The most impressive example out of all of them\".",
          f"highest mean test acc after of all schedule x method x lr configurations (tie {100 * TIE:.0f} pt)",
          iterative.iterative_unstructured_lr001_is_best_of_all),
    Claim("C34", "3.2.2", "Iterative unstructured, lr 0.01: \"an accuracy drop of 15% after 99% of parameters have "
          "been removed\" (read as 15 points).",
          f"unpruned accuracy - test acc after at 99% within 15 +- {100 * ABOUT:.0f} pts",
          iterative.iterative_unstructured_lr001_drops_15_at_99),
    Claim("C35", "3.2.2", "Iterative unstructured, lr 0.01: \"it was able to recover from a 10% test accuracy before "
          "it was fine tuned\" (at 99%).",
          _RECOVERS_AT_99, iterative.iterative_unstructured_lr001_recovers_at_99),
    Claim("C36", "3.2.2", "Iterative unstructured, lr 0.01: \"The model was overfitting until it had about 80% of all "
          "parameters removed\".",
          f"the first amount from which the train - test gap stays <= {100 * GAP:.0f} pts lies within 80% +- "
          f"{100 * WINDOW:.0f}%, and the mean gap before it is > {100 * GAP:.0f} pts; partly if one holds",
          iterative.iterative_unstructured_lr001_overfits_until_80),
    Claim("C37", "3.2.3", "Iterative unstructured: \"there is a sweet spot learning rate\" (.01).",
          _LR_001_BEST, iterative.iterative_unstructured_lr001_is_best),
    Claim("C38", "3.2.3", "Iterative unstructured: \".8 crashes the accuracy and .0001 crashes it less\".",
          _LR_00001_ABOVE_LR_08, iterative.iterative_unstructured_lr00001_beats_lr08),
    Claim("C39", "3.2.3", "Iterative unstructured, lr 0.0001: \"This learning rate shows us a slow decline in "
          "accuracy\".",
          f"no decrease between neighbouring amounts up to 95% above {100 * SLOW_STEP:.0f} pts, and a decline "
          f"(unpruned - last amount) of at least {100 * STEEPER:.0f} pts; partly if one holds",
          iterative.iterative_unstructured_lr00001_declines_slowly),
]


def evaluate_claims(rows, scope: str | None = None) -> list[dict]:
    """Check every claim on the rows of ``scope`` (default: ``preferred_scope``).

    Returns one dict per claim: id, section, claim, tolerance, measurement, verdict, reason.
    """
    data = CurveSet(curves_for_scope(rows, scope))
    out = []
    for claim in CLAIMS:
        try:
            res = claim.check(data)
        except MissingRows as exc:
            res = Outcome("-", NOT_TESTABLE, str(exc))
        out.append({"id": claim.cid, "section": claim.section, "claim": claim.text, "tolerance": claim.tolerance,
                    "measurement": res.measurement, "verdict": res.verdict, "reason": res.reason})
    return out
