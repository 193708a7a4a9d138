"""Client-level differential privacy: clipping and Gaussian noise (`mechanism`), the accountant over
Google's `dp-accounting` (`accountant`), and a run's running ε and budget (`tracker`).
See docs/privacy.md for the order of clip, screen, aggregate and noise, and what is guaranteed."""

from consortium.privacy.accountant import (
    PrivacyBudgetExceeded,
    epsilon,
    epsilon_of_rounds,
    noise_multiplier_for,
)
from consortium.privacy.mechanism import (
    DpRule,
    central_noise,
    clip_updates,
    distributed_noise_share,
)

__all__ = [
    "DpRule",
    "PrivacyBudgetExceeded",
    "central_noise",
    "clip_updates",
    "distributed_noise_share",
    "epsilon",
    "epsilon_of_rounds",
    "noise_multiplier_for",
]
