"""KL divergence estimators and KL coefficient controllers.

Estimators of KL(pi || pi_ref) per token from samples of pi (J. Schulman, "Approximating KL Divergence", 2020),
with log r = log pi_ref(x) - log pi(x):
    k1 = -log r                     unbiased, high variance, can be negative
    k2 = (log r)^2 / 2              biased, low variance, always >= 0
    k3 = (r - 1) - log r            unbiased, low variance, always >= 0
InstructGPT (Ouyang et al. 2022, eq. 2) uses k1 folded into the reward: r_t = -beta * log(pi / pi_ref).
"""
import torch

# log r -> per-token estimate; the table the config's `ppo.kl_estimator` choices come from
ESTIMATORS = {
    "k1": lambda log_ratio: -log_ratio,
    "k2": lambda log_ratio: 0.5 * log_ratio**2,
    "k3": lambda log_ratio: torch.expm1(log_ratio) - log_ratio,
}


def kl_estimate(logprobs: torch.Tensor, reference_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL estimate from policy and reference log-probs of the sampled tokens (same shape out)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {', '.join(ESTIMATORS)}")
    return ESTIMATORS[estimator](reference_logprobs - logprobs)


class FixedKLController:
    """A constant KL coefficient beta."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


class AdaptiveKLController(FixedKLController):
    """Adaptive beta (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", eq. 2):

        e_t = clip(KL_t / KL_target - 1, -0.2, 0.2)
        beta_{t+1} = beta_t * (1 + K_beta * e_t),   K_beta = n_steps / horizon
    """

    def __init__(self, kl_coef: float, target: float, horizon: float):
        super().__init__(kl_coef)
        self.target, self.horizon = target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


def kl_controller(ppo) -> FixedKLController:
    """The controller the config's `ppo` section asks for: adaptive (`ppo.adaptive_kl`) or fixed."""
    if ppo.adaptive_kl:
        return AdaptiveKLController(ppo.kl_coef, ppo.kl_target, ppo.kl_horizon)
    return FixedKLController(ppo.kl_coef)
