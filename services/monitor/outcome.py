"""What one joined prediction says about its model: a loss, and whether it was a miss. Pure: no I/O.

The join pairs a prediction with its ground truth whatever the task; the model's task decides
what the pair means. A classifier's prediction is right or wrong: loss 0 or 1, and a miss when
wrong. A regressor's is off by ``|predicted - actual|``: that is its loss (live MAE, RMSE, the
canary judge and the champion watch average it), and it is a miss when it exceeds the champion's
holdout threshold (:meth:`shared.reference.ExpectedError.miss`, the holdout's 80th percentile of
absolute errors) -- so the concept detectors, which want a bounded 0/1 stream, get one, and one
huge error (regression errors are heavy-tailed) counts as one miss, not as its size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.monitor.join import JoinedPair
from shared.reference import ExpectedError
from shared.spec import regression_target


@dataclass(frozen=True)
class Outcome:
    """One joined prediction, scored.

    ``miss`` is None when there is no threshold to call a regressor's error a miss (no card
    with an expected error): its loss still counts for live MAE and verdicts, but the concept
    stream does not see it.
    """

    loss: float
    miss: bool | None

    @classmethod
    def classified(cls, correct: bool) -> Outcome:
        """A classifier's outcome: loss 1 and a miss when the prediction was wrong."""
        return cls(0.0 if correct else 1.0, not correct)

    @property
    def correct(self) -> bool:
        """No loss at all (a classifier's right answer)."""
        return self.loss == 0.0


def score(
    pair: JoinedPair,
    regression: bool,
    expected: ExpectedError | None = None,
    low: float | None = None,
    high: float | None = None,
) -> Outcome | None:
    """The pair's outcome for a model of this task; None when a regressor's pair cannot be scored.

    A regressor's predicted and actual values must both be finite numbers (a JSON integer
    arrives as an int: compared as floats), and the actual one within the label's declared
    ``low`` / ``high`` (ingest rejects it otherwise: it is no ground truth the trainer will see;
    a prediction outside the range is still the model's answer). Anything else -- text, a flag,
    NaN, infinity -- is no outcome (the caller counts it) rather than a crash or a poisoned mean.
    ``expected`` is the champion's holdout error, whose threshold makes an absolute error a miss.

    >>> from datetime import UTC, datetime
    >>> import numpy as np
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> pair = JoinedPair("a", 1, "champion", 12.5, 10, t, t)
    >>> score(pair, regression=True, expected=ExpectedError.of_errors(np.array([1.0, 2.0, 2.0])))
    Outcome(loss=2.5, miss=True)
    >>> score(pair, regression=False)
    Outcome(loss=1.0, miss=True)
    >>> score(JoinedPair("b", 1, "champion", "nan", 10, t, t), regression=True) is None
    True
    """
    if not regression:
        return Outcome.classified(pair.correct)
    predicted = regression_target(pair.predicted)
    actual = regression_target(pair.actual, low, high)
    if predicted is None or actual is None:
        return None
    loss = abs(predicted - actual)
    if not math.isfinite(loss):  # two huge finite numbers of opposite sign
        return None
    miss = expected.miss(loss) if expected is not None and expected.threshold is not None else None
    return Outcome(loss, miss)
