"""The paper's constants, in one place: "The Effects of Pruning on CIFAR-10 Model" (Parra Montenegro &
Mercado Franco). Everything else imports them from here."""

from __future__ import annotations

#: The baseline (Section 1.2): the `paper` model trained 10 epochs with plain SGD, lr 0.8, batch 512.
ARCH = "paper"
BASELINE_EPOCHS = 10
BASELINE_LR = 0.8
BATCH_SIZE = 512
#: Pixel preprocessing that lets lr 0.8 train this model (x/255 - 0.5; see README).
NORMALIZE = "center"

#: The pruning grid (Section 1.3, Table 1): cumulative fractions pruned, fine-tuning learning rates,
#: fine-tuning epochs per step.
AMOUNTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
LRS = (0.8, 0.01, 0.0001)
FINE_TUNE_EPOCHS = 10

#: Schedules, methods and ranking scopes, in the order the tool lists, runs and reports them.
SCHEDULES = ("oneshot", "iterative")
#: Every schedule minicnn runs: the paper's, then gradual (AGP) and lottery-ticket (LTH) pruning beyond it.
ALL_SCHEDULES = SCHEDULES + ("agp", "lth")
METHODS = ("unstructured", "structured")
SCOPES = ("layer", "global")
