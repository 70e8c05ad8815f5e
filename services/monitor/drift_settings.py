"""The drift watch's tuning that is not in the spec. Pure: no I/O.

The spec's ``monitoring`` section (:class:`~shared.spec.MonitoringSpec`) holds what a model's
owner chooses (detectors, PSI alert, confirmation samples, cooldown); :class:`DriftSettings`
holds how the monitor turns that into tests -- window sizes, confirmation z-values and the
false-alarm allowances of the categorical statistics (:mod:`services.monitor.categorical`).
It is shared by :class:`~services.monitor.drift.ModelDrift` and the categorical features'
:class:`~services.monitor.category_drift.CategoryDrift`.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.monitor.categorical import RARE_SHARE


@dataclass(frozen=True)
class DriftSettings:
    """Tuning that is not in the spec (the spec's ``monitoring`` section holds the rest)."""

    psi_window: int = 1000
    """Rows per tumbling window of feature PSI."""
    prediction_window: int = 1000
    """Predictions per tumbling window of prediction drift."""
    z_confirm: float = 3.0
    """Standard errors by which fresh errors must exceed the pre-change rate (concept)."""
    min_confirmation_fraction: float = 0.25
    """Share of ``confirmation_samples`` a concept confirmation waits for before it may decide."""
    min_reference_samples: int = 500
    """Pre-change samples a concept candidate needs to be confirmed against its own pre-change
    rate; with fewer (burn-in after a start or reset) it is confirmed against the version's
    expected error, or suppressed when there is none."""
    z_reject: float = 0.0
    """Below this z after ``confirmation_samples`` fresh errors, a concept candidate is rejected."""
    confirmation_extend: int = 4
    """A concept confirmation confirms at ``z_confirm`` within this many x ``confirmation_samples``."""
    z_patient: float = 3.5
    """After that, an undecided concept confirmation needs this z (it looked at the data more often)."""
    confirmation_patience: int = 10
    """An undecided concept confirmation gives up after this many x ``confirmation_samples``."""
    time_history: int = 16384
    """Sample times kept per stream to date a change point (``change_started_at``)."""
    expected_window: int = 200
    """Most recent labelled outcomes held against the version's expected (holdout) error."""
    z_expected: float = 3.0
    """Standard errors by which that window must exceed the expected error to be a candidate."""
    category_hops: int = 2
    """A categorical window of ``psi_window`` rows closes every ``psi_window / category_hops`` rows
    (no River detector proposes early candidates for them; 1: tumbling, as numeric PSI)."""
    category_rare_share: float = RARE_SHARE
    """Categories below this training share are pooled into one PSI bucket."""
    category_window_alpha: float = 1e-3
    """Chance that a stable window's category PSI exceeds its alert (a candidate); the same
    chance for its largest share z (shared by both sides of every bucket)."""
    category_confirm_alpha: float = 1e-2
    """Chance that stable fresh values confirm a category candidate by their PSI (all looks
    together); the same chance by the share of the bucket the window named."""
    category_share_z: bool = True
    """Also propose a window whose largest per-bucket share z crosses its alert, and let fresh
    values confirm by that bucket's share (False: the category PSI alone, as before)."""
    category_min_psi: float = 0.02
    """Smallest category PSI that is a drift however many values show it (doubling a 10 % share
    is 0.08, a 5 % one 0.037, a 2 % one 0.014)."""
    unseen_rise: float = 0.01
    """Rise of the unseen-category rate over training's that is a drift however sure it is."""
    z_unseen: float = 3.0
    """Binomial standard errors by which the unseen rate must exceed training's (window and confirmation)."""
