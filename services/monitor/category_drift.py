"""The categorical features of one model's drift watch: windows, candidates, confirmations. Pure: no I/O.

Categorical and boolean features have no River detector. :class:`CategoryDrift` counts their
coded values (:meth:`~services.monitor.categorical.CategoryBuckets.codes`) in hopping windows
(:class:`~services.monitor.categorical.CategoryWindow`), proposes a closed window's category
PSI, largest per-bucket share z or unseen-category rate above its noise-calibrated alert to the
model's :class:`~services.monitor.alarms.AlarmPolicy`, and feeds the rows after a candidate to
its confirmation (:class:`~services.monitor.alarms.CategoryPsiAbove`,
:class:`~services.monitor.alarms.UnseenAbove`). :class:`~services.monitor.drift.ModelDrift`
owns one beside its numeric detectors and hands it the same rows; the statistics and why their
thresholds keep a stable stream quiet are in :mod:`services.monitor.categorical`.

The share z is a cause together with the PSI -- the feature -- not one of its own: both say
"the category shares moved", so a change that both see alarms once, and stays latched while
either is over its alert. Its alarms name it (detector :data:`SHARE_Z`, not ``PSI``) because
their statistic and threshold are z values, which would read as absurd PSIs; when both cross in
one window the PSI is proposed (the broader claim, and the alarm as it was before the share z).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.monitor.alarms import (
    MIN_PSI_SAMPLES,
    Alarm,
    AlarmPolicy,
    CategoryPsiAbove,
    Confirmation,
    DriftCandidate,
    DriftUpdate,
    Suppressed,
    UnseenAbove,
)
from services.monitor.categorical import (
    MISSING,
    UNSEEN,
    CategoryBuckets,
    CategoryWindow,
    CategoryWindowResult,
    CategoryWindowState,
    chi_square_quantile,
    psi_alert,
    share_z_alert,
    unseen_alert,
    unseen_stream,
)
from services.monitor.drift_settings import DriftSettings
from services.monitor.psi import PsiWindowState
from services.monitor.sample_times import SampleTimes
from shared.spec import MonitoringSpec

SHARE_Z = "share-z"
"""The detector name of a candidate from one bucket's share (its statistic and threshold are z values)."""

Outcome = tuple[int, int, int, Alarm | Suppressed]
"""A policy outcome keyed for publication order: (row in the batch, stream order, phase)."""


class CategoryDrift:
    """The categorical and boolean features of one model: their window and their candidates.

    Each feature is two causes of the policy: the feature itself (its shares: PSI and share z) and
    :func:`~services.monitor.categorical.unseen_stream` of it (its unseen categories), each
    confirmed, cooled down and latched apart. The policy is passed in on every call: the watch
    owns it (and replaces it when it restores a checkpoint).
    """

    def __init__(
        self,
        buckets: Mapping[str, CategoryBuckets],
        settings: DriftSettings,
        monitoring: MonitoringSpec,
        window: CategoryWindowState | None = None,
    ) -> None:
        """``window``: an open window to continue (its window size and hops are kept)."""
        self.buckets = dict(buckets)
        self.settings = settings
        self.monitoring = monitoring
        if window is None:
            self._window = CategoryWindow(self.buckets, settings.psi_window, hops=settings.category_hops)
        else:
            self._window = CategoryWindow(self.buckets, settings.psi_window, window)

    @classmethod
    def restore(
        cls,
        buckets: Mapping[str, CategoryBuckets],
        settings: DriftSettings,
        monitoring: MonitoringSpec,
        window: CategoryWindowState | None,
        psi: PsiWindowState,
    ) -> CategoryDrift:
        """Continue from a checkpoint's open ``window``. Without one (an older checkpoint, or the
        model had no categorical feature) the window starts empty, its hops closing with the
        numeric PSI window ``psi``."""
        if window is None:
            hops = settings.category_hops
            hop = max(1, psi.window // hops)
            window = CategoryWindowState(window=psi.window, hops=hops, rows=psi.rows % hop)
        return cls(buckets, settings, monitoring, window)

    @property
    def state(self) -> CategoryWindowState | None:
        """The open window as checkpointed (None without categorical features)."""
        return self._window.state if self.buckets else None

    @property
    def remaining(self) -> int | None:
        """Rows until the open hop closes a window (None without categorical features)."""
        return self._window.remaining if self.buckets else None

    def status(self) -> dict[str, Any]:
        """Each feature's PSI buckets and the unseen rate training saw (for the status page)."""
        return {
            name: {"buckets": list(b.names), "unseen_expected": b.unseen_expected} for name, b in self.buckets.items()
        }

    def add(
        self,
        codes: Mapping[str, NDArray[np.int64]],
        start: int,
        end: int,
        policy: AlarmPolicy,
        at: datetime,
        update: DriftUpdate,
    ) -> None:
        """Count rows ``start:end`` of the coded columns (they must fit in the open hop); a window
        that closes is shown, and its statistics unlatch their causes or are proposed."""
        closed = self._window.add({name: c[start:end] for name, c in codes.items()}, end - start)
        self._close(closed, policy, at, update)

    def confirm(
        self,
        codes: Mapping[str, NDArray[np.int64]],
        start: int,
        end: int,
        policy: AlarmPolicy,
        times: SampleTimes,
        newer: Sequence[float],
        row_times: Sequence[datetime],
        outcomes: list[Outcome],
        first_order: int,
    ) -> None:
        """Rows ``start:end`` through the pending confirmations of the categorical causes: bucket
        indices to a category PSI's, unseen-or-not to an unseen rate's (missing values to none).

        ``times`` and ``newer``: the prediction times kept and those of rows ``start:end`` (to
        date a change); ``row_times``: every row's time; ``first_order``: the stream order of the
        first feature's PSI (each feature takes two, PSI then unseen).
        """
        for position, (name, buckets) in enumerate(self.buckets.items()):
            column = codes.get(name)
            if column is None:
                continue
            for unseen, stream in ((False, name), (True, unseen_stream(name))):
                if not policy.pending("data", stream):
                    continue
                order = first_order + 2 * position + unseen
                for row, code in enumerate(column[start:end].tolist()):
                    if unseen:
                        if code == MISSING:
                            continue
                        value = float(code == UNSEEN)
                    else:
                        bucket = buckets.psi_code(code)
                        if bucket is None:
                            continue
                        value = float(bucket)
                    started = times.change_started(policy.pending_of("data", stream), newer[: row + 1])
                    outcome = policy.observe("data", stream, value, row_times[start + row], started)
                    if outcome is not None:
                        outcomes.append((row, order, 0, outcome))
                        break

    def _close(
        self,
        closed: dict[str, CategoryWindowResult] | None,
        policy: AlarmPolicy,
        at: datetime,
        update: DriftUpdate,
    ) -> None:
        """Category shares and unseen rates of windows that just closed: shown, unlatched or proposed.

        A window statistic needs ``max(confirmation_samples, 200)`` values (fewer: no evidence
        either way); its alert follows the noise of that many values (:mod:`.categorical`). A
        candidate is confirmed on the fresh values after it, as a numeric PSI window's is.
        """
        if closed is None:
            return
        settings = self.settings
        step = max(self.monitoring.confirmation_samples, MIN_PSI_SAMPLES)
        looks = max(1, math.ceil(settings.psi_window / step))
        for name, result in closed.items():
            buckets = self.buckets[name]
            if result.known:
                update.psi[name] = result.psi
            if result.present:
                update.unseen[name] = result.unseen_rate
            if result.known >= step and buckets.df > 0:
                self._shares(name, buckets, result, step, looks, policy, at, update)
            if result.present >= step:
                expected = buckets.unseen_expected
                alert = unseen_alert(expected, result.present, settings.z_unseen, settings.unseen_rise)
                unseen_confirmation = UnseenAbove(
                    expected=expected, step=step, looks=looks, z=settings.z_unseen, rise=settings.unseen_rise
                )
                stream = unseen_stream(name)
                self._candidate(
                    stream, name, "unseen", result.unseen_rate, alert, unseen_confirmation, policy, at, update
                )

    def _shares(
        self,
        name: str,
        buckets: CategoryBuckets,
        result: CategoryWindowResult,
        step: int,
        looks: int,
        policy: AlarmPolicy,
        at: datetime,
        update: DriftUpdate,
    ) -> None:
        """A window's category shares: its PSI, and its largest share z (both sides of every bucket
        share the window's allowance), each against its alert. One cause -- the feature -- for both:
        a PSI crossing is proposed as ``PSI``, else a share-z crossing as ``share-z``; either is
        confirmed by the same :class:`CategoryPsiAbove` (PSI or the named bucket's share), and
        the cause unlatches only when both are back under their alerts."""
        settings = self.settings
        quantile = chi_square_quantile(buckets.df, settings.category_window_alpha)
        alert = psi_alert(quantile, result.known, settings.category_min_psi, buckets.reference_rows)
        z_alert = share_z_alert(settings.category_window_alpha, buckets.share_z_tests)
        by_share = settings.category_share_z and abs(result.share_z) > z_alert
        if result.psi <= alert and not by_share:
            policy.unlatch("data", name)
            return
        named_bucket: dict[str, Any] = {}  # the PSI alone
        if settings.category_share_z:
            z_confirm = share_z_alert(settings.category_confirm_alpha, looks)
            named_bucket = {"bucket": result.share_bucket, "rise": result.share_z > 0, "z": z_confirm}
        confirmation = CategoryPsiAbove(
            expected=list(buckets.expected),
            step=step,
            looks=looks,
            quantile=chi_square_quantile(buckets.df, settings.category_confirm_alpha / looks),
            floor=settings.category_min_psi,
            reference_rows=buckets.reference_rows,
            **named_bucket,
        )
        if result.psi > alert:
            self._candidate(name, name, "PSI", result.psi, alert, confirmation, policy, at, update)
        else:
            self._candidate(name, name, SHARE_Z, abs(result.share_z), z_alert, confirmation, policy, at, update)

    def _candidate(
        self,
        stream: str,
        feature: str,
        detector: str,
        value: float,
        alert: float,
        confirmation: Confirmation,
        policy: AlarmPolicy,
        at: datetime,
        update: DriftUpdate,
    ) -> None:
        """A window statistic: unlatches its cause at or below ``alert``, else proposes a candidate."""
        if value <= alert:
            policy.unlatch("data", stream)
            return
        if policy.latched("data", stream) or policy.pending("data", stream):
            return
        candidate = DriftCandidate(
            kind="data",
            feature=feature,
            detector=detector,
            statistic=value,
            threshold=alert,
            samples=self.settings.psi_window,
            change_samples=0,
            stream=None if stream == feature else stream,
        )
        update.add(policy.propose(candidate, confirmation, at))
