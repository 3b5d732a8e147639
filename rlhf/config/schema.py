"""The config schema: typed sections with a docstring per field, and validators that name the offending key."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from ..algo.advantages import ESTIMATORS as ADVANTAGE_ESTIMATORS
from ..algo.kl import ESTIMATORS as KL_ESTIMATORS
from ..generation import ENGINES
from ..optim import LR_SCHEDULES
from .base import ConfigError, Section
from .critic import CriticConfig
from .lora import LoraSettings
from .placement import ActorsConfig, DeepSpeedConfig, RoleResources, TrainableDeepSpeed, ZeroSettings

ROLES = ("policy", "value", "reference", "reward", "rollout")
STAGES = ("ppo", "sft", "rm", "pipeline", "critic")


class RunConfig(Section):
    name: Optional[str] = None
    """Run name: the run directory is `<output_dir>/<name>` and it is the wandb run name unless set there;
    None is the stage's own default ('ppo-default', 'sft-default', 'rm-default', 'pipeline-default')."""
    output_dir: str = "runs"
    """Folder that holds run directories (resolved config, metrics.jsonl, checkpoints, exported model)."""
    seed: int = 0
    """Seed of everything random: each stream (data order, sampling, minibatch shuffles, splits, evaluation)
    derives from (seed, purpose, step, rank)."""
    num_steps: int = Field(60, ge=1)
    """Number of PPO steps (one rollout batch each)."""
    ray_address: Optional[str] = None
    """Address of an existing Ray cluster ('auto', 'host:6379' or 'ray://host:10001'); None: RAY_ADDRESS if set (inside
    a Ray job), else a local cluster started for the run."""
    placement_timeout_s: float = Field(120.0, gt=0)
    """How long the run waits for the cluster to place its actors before failing (naming what it asked for)."""
    max_restarts: int = Field(3, ge=0)
    """Recoveries a run may make (a lost rollout, reference or reward actor recreated in place); one more loss ends
    the run instead of looping."""
    max_bad_steps: int = Field(3, ge=1)
    """Optimizer updates in a row a trainable role may skip for a non-finite loss or gradient norm (each is skipped
    on every rank, so replicas never diverge); one more stops the run, keeping the last good checkpoint."""
    phase_timeout_s: float = Field(1800.0, gt=0)
    """Deadline of every wait on actors (one phase of a step: generate, score, train, sync, save; start-up) and of
    every collective inside them: a dead or stuck peer fails the run with the roles that did not answer, never hangs."""


class TinyModelConfig(Section):
    num_layers: int = Field(2, ge=1)
    """Transformer blocks of the tiny random Llama made by the factory."""
    hidden_size: int = Field(64, ge=8)
    """Width of the tiny model."""
    num_heads: int = Field(4, ge=1)
    """Attention heads of the tiny model."""


class ModelConfig(Section):
    policy: str = "tiny"
    """Policy: a Hugging Face causal-LM folder or hub name, or 'tiny' for a random tiny Llama with a char tokenizer."""
    reference: Optional[str] = None
    """Reference (KL anchor, the SFT model in InstructGPT); None means the initial policy."""
    value: Optional[str] = None
    """Value model base (an HF model; a scalar head is added); None means the reward model when
    `ppo.init_value_from_reward`, else the policy."""
    tiny: TinyModelConfig = TinyModelConfig()
    """Shape of the 'tiny' model."""
    cache_dir: str = "~/.cache/rlhf"
    """Where generated models (tiny, prepared SmolLM2) are written once and reused."""
    gradient_checkpointing: bool = False
    """Recompute each transformer layer's activations in the backward pass instead of keeping them (every trainable
    model: policy, value, SFT, reward model): less memory for long sequences, about a third more compute."""
    logprobs_chunk: int = Field(256, ge=0)
    """Response positions whose full-vocabulary fp32 log-softmax (and entropy) is computed at a time; in training
    each chunk is recomputed in the backward pass instead of kept. 0: all positions at once."""
    lora: LoraSettings = LoraSettings()
    """LoRA adapters on the PPO policy (and value model): `rank` > 0 turns them on."""


class DataConfig(Section):
    prompts: str = "toy:repeat_digit"
    """Prompt data: a local json/jsonl/parquet/csv file or folder, a hub dataset name, or 'toy:<task>' (bundled)."""
    input_key: str = "prompt"
    """Column holding the prompt text."""
    split: str = "train"
    """Dataset split to read."""
    apply_chat_template: bool = False
    """Wrap each prompt as a user message with the tokenizer's chat template (generation prompt added)."""
    max_prompt_length: int = Field(64, ge=1)
    """Longest prompt in tokens; a longer prompt is an error naming its row."""
    ptx: Optional[str] = None
    """PPO-ptx pretraining text data (file, folder or hub name); None disables the ptx loss."""
    ptx_text_key: str = "text"
    """Column holding the pretraining text."""
    ptx_max_length: int = Field(64, ge=2)
    """Token length pretraining texts are cut to."""
    ptx_batch_size: int = Field(8, ge=1)
    """Pretraining sequences per PPO minibatch (split across policy actors)."""


class RolloutConfig(Section):
    prompts_per_step: int = Field(16, ge=1)
    """Prompts sampled per PPO step; the rollout batch is prompts_per_step * n_samples_per_prompt."""
    n_samples_per_prompt: int = Field(4, ge=1)
    """Responses sampled per prompt (>= 2 for GRPO and RLOO)."""
    max_new_tokens: int = Field(12, ge=1)
    """Response length limit; a response that reaches it without EOS is 'truncated'."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature; log-probs for PPO are computed from logits divided by it."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling mass."""
    top_k: int = Field(0, ge=0)
    """Top-k sampling (0 disables)."""
    engine: Literal[tuple(ENGINES)] = "hf"
    """Rollout engine: 'hf' is transformers `generate` with KV cache."""
    micro_batch_size: Optional[int] = Field(None, ge=1)
    """Sequences a rollout actor samples at once (bounds its KV cache); None: its whole share of the batch at once.
    Sampling stays deterministic for a given value, but a different value draws different samples."""
    weight_sync: Literal["collective", "object_store"] = "collective"
    """How new policy weights reach rollout actors: 'collective' broadcasts them bucket by bucket over a process
    group of the policy's rank 0 and the rollout actors (NCCL on GPU, gloo on CPU); 'object_store' gathers them whole
    on the policy's rank 0 and puts them once in the Ray object store."""
    weight_sync_bucket_mb: float = Field(64.0, gt=0)
    """Size of one bucket of the collective sync: the policy's extra memory during a sync is about this (per bucket
    gathered and flattened), not the model's size."""
    weight_sync_timeout_s: float = Field(120.0, gt=0)
    """Deadline for forming the weight-sync group and for each broadcast."""
    async_: bool = Field(False, alias="async")
    """The rollout actors generate step t+1's samples while step t scores and trains, with the
    weights of step t-1 (one step off-policy; the PPO ratio is taken against the policy that scores them). Resume
    and recovery replay exactly only in synchronous mode."""


class RewardConfig(Section):
    function: Optional[str] = "rlhf.data.toy:repeat_digit_reward"
    """Reward as Python 'module:function(prompts, responses) -> list[float]'; exclusive with `model`."""
    model: Optional[str] = None
    """Reward as an HF model with a scalar head (AutoModelForTokenClassification, num_labels=1)."""
    missing_eos_penalty: Optional[float] = None
    """Added to the score of a response that ends without EOS (e.g. -1.0); None disables."""
    normalization: Literal["none", "running"] = "none"
    """'running': scores are whitened with running mean/std over all steps so far (checkpointed)."""
    clip: Optional[float] = None
    """Clip scores (after normalization) to [-clip, clip]; None disables."""


class PPOConfig(Section):
    advantage_estimator: Literal[tuple(ADVANTAGE_ESTIMATORS)] = "gae"
    """'gae' uses the value role; 'grpo', 'rloo', 'reinforce++' are critic-free (no value actors are started)."""
    kl_coef: float = Field(0.02, ge=0)
    """Initial KL coefficient beta."""
    kl_estimator: Literal[tuple(KL_ESTIMATORS)] = "k1"
    """Per-token KL estimator (Schulman 2020)."""
    kl_mode: Literal["reward", "loss"] = "reward"
    """'reward': -beta * KL_t folded into token rewards (InstructGPT); 'loss': beta * KL added to the policy loss."""
    adaptive_kl: bool = False
    """Adapt beta toward `kl_target` (Ziegler et al. 2019)."""
    kl_target: float = Field(6.0, gt=0)
    """Target sequence KL for the adaptive controller."""
    kl_horizon: float = Field(10000, gt=0)
    """Horizon of the adaptive controller."""
    gamma: float = Field(1.0, ge=0, le=1)
    """Discount."""
    lam: float = Field(0.95, ge=0, le=1)
    """GAE lambda."""
    whiten_advantages: bool = True
    """Whiten advantages over the whole rollout batch (GAE)."""
    clip_eps: float = Field(0.2, gt=0)
    """Policy ratio clip."""
    value_clip_eps: Optional[float] = 0.2
    """Value clip around the rollout values; None disables."""
    value_coef: float = Field(0.5, ge=0)
    """Scale of the value loss (the value model trains separately; this scales its gradient)."""
    ent_coef: float = Field(0.0, ge=0)
    """Entropy bonus coefficient."""
    ppo_epochs: int = Field(1, ge=1)
    """Passes over each rollout batch."""
    num_minibatches: int = Field(2, ge=1)
    """Optimizer steps per epoch; the rollout batch is split into this many minibatches."""
    ptx_coef: float = Field(0.0, ge=0)
    """PPO-ptx gamma: weight of the pretraining LM loss (needs `data.ptx`)."""
    policy_lr: float = Field(1e-5, gt=0)
    """Policy learning rate (AdamW)."""
    value_lr: float = Field(1e-5, gt=0)
    """Value learning rate (AdamW)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay (policy and value)."""
    warmup_steps: int = Field(0, ge=0)
    """Linear learning-rate warmup, in optimizer steps (policy and value)."""
    lr_schedule: Literal[tuple(LR_SCHEDULES)] = "constant"
    """After the warmup: 'constant', or decayed to `min_lr_ratio` x lr by the run's last optimizer step
    (`run.num_steps` x `ppo_epochs` x `num_minibatches`; 'cosine', 'linear'); policy and value."""
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    """The decayed schedules' final learning rate, as a fraction of the role's lr."""
    max_grad_norm: float = Field(1.0, ge=0)
    """Global gradient-norm clip of policy and value (0 disables)."""
    init_value_from_reward: bool = False
    """Initialise the value model from the reward model (needs `reward.model`)."""


class PrecisionConfig(Section):
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    """Training and inference dtype; 'auto' is bf16 on GPU and fp32 on CPU."""
    cpu_matmul: Literal["ieee", "bf16"] = "ieee"
    """fp32 matmul path on CPU: 'bf16' lets oneDNN use bf16 internally (2x faster on AVX-512 bf16 CPUs)."""
    attention: Literal["auto", "sdpa", "eager"] = "auto"
    """Attention kernel of every model: 'auto' is PyTorch's SDPA on GPU and the plain matmul attention on CPU
    (its backward is 15% faster there for SmolLM2 at 192 tokens; it holds the T x T scores, so for long sequences
    over narrow heads 'sdpa' is faster on CPU too: 2.6x forward + backward for the toy critic's model at 480 tokens)."""


class LoggingConfig(Section):
    wandb_project: str = "rlhf"
    """wandb project."""
    wandb_run_name: Optional[str] = None
    """wandb run name (default: run.name)."""
    wandb_group: Optional[str] = None
    """wandb group."""
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """'auto' is online when WANDB_API_KEY is set, offline otherwise."""
    num_sample_generations: int = Field(4, ge=0)
    """Rows of the table of sample generations logged each time samples are logged."""
    samples_every: int = Field(10, ge=1)
    """Steps between sample tables."""
    progress_bar: bool = True
    """Console progress bar."""


class CheckpointConfig(Section):
    every: int = Field(10, ge=0)
    """Checkpoint every N steps (0: only at the end); a run that loses a trainable rank resumes from the last one."""
    keep_last: int = Field(2, ge=1)
    """Checkpoints kept; older ones are deleted after a new one is complete."""
    save_at_end: bool = True
    """Also checkpoint after the last step (off for benchmarks and throwaway runs)."""
    save_on_stop: bool = True
    """A stage stopped by SIGTERM or SIGINT (a scheduler, `rlhf jobs stop`, Ctrl-C) finishes the step in flight and
    checkpoints it before it ends (`--resume` continues there); a second signal stops at once. false: the last
    periodic checkpoint stands."""
    export_hf: bool = True
    """Export the final policy in Hugging Face format (save_pretrained + tokenizer) to `<run>/policy_hf`."""


class SupervisedStageConfig(Section):
    """Fields shared by the supervised stages (SFT, reward model)."""

    data: str = "toy:repeat_digit"
    """The stage's data: a file, folder, hub name or 'toy:<task>' (row forms: see the stage's keys)."""
    prompt_key: str = "prompt"
    """Column of the prompt."""
    apply_chat_template: bool = False
    """Format prompts with the tokenizer's chat template."""
    max_length: int = Field(64, ge=4)
    """Longest prompt + response in tokens; longer responses are cut (the prompt must fit)."""
    validation_fraction: float = Field(0.05, ge=0, lt=1)
    """Share of rows held out for validation."""
    batch_size: int = Field(32, ge=1)
    """Rows per optimizer step (global, split across the stage's actors)."""
    micro_batch_size: int = Field(16, ge=1)
    """Rows per forward/backward on one actor."""
    epochs: float = Field(2.0, gt=0)
    """Passes over the training rows."""
    lr: float = Field(1e-5, gt=0)
    """Learning rate (AdamW; linear warmup, then `lr_schedule`)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    warmup_steps: int = Field(10, ge=0)
    """Linear warmup steps."""
    lr_schedule: Literal[tuple(LR_SCHEDULES)] = "constant"
    """After the warmup: 'constant', or decayed to `min_lr_ratio` x lr by the stage's last step ('cosine', 'linear')."""
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    """The decayed schedules' final learning rate, as a fraction of `lr`."""
    max_grad_norm: float = Field(1.0, ge=0)
    """Global gradient-norm clip (0 disables)."""
    deepspeed: ZeroSettings = ZeroSettings()
    """ZeRO stage and offload of this stage's engine (micro-batch: `micro_batch_size` above)."""
    eval_every: int = Field(50, ge=1)
    """Steps between validations (and at the end)."""


class SFTConfig(SupervisedStageConfig):
    """Demonstrations: rows of prompt/response pairs or chat messages; the best checkpoint goes to <run>/best_hf.
    Runs on the policy role's actors (`actors.policy`)."""

    response_key: str = "response"
    """Column of the demonstrated response."""
    messages_key: str = "messages"
    """Column of a chat (list of {role, content}); the last assistant message is the response."""
    select_by: Literal["val_loss", "reward"] = "val_loss"
    """Metric that picks the best checkpoint: validation loss, or the mean reward (reward.function / reward.model)
    of responses sampled on validation prompts, as InstructGPT chose SFT checkpoints."""


class RMConfig(SupervisedStageConfig):
    """Comparisons: rows of prompt + chosen/rejected, or prompt + responses (K) + ranks (1 = best; ties dropped).
    Runs on the reward role's actors (`actors.reward`)."""

    chosen_key: str = "chosen"
    """Column of the preferred response (pair rows)."""
    rejected_key: str = "rejected"
    """Column of the other response (pair rows)."""
    responses_key: str = "responses"
    """Column of the K responses (ranking rows)."""
    ranks_key: str = "ranks"
    """Column of the K ranks (1 = best); a row without it must have no other list column and is read as ordered
    best first."""
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of prompts held out for validation accuracy."""
    batch_size: int = Field(16, ge=1)
    """Prompts (batch elements, each with all its C(K,2) pairs) per optimizer step, global."""
    micro_batch_size: int = Field(8, ge=1)
    """Prompts per forward/backward on one actor."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the training prompts (InstructGPT: one epoch, to avoid overfitting)."""
    margin: float = 0.0
    """Margin m in -log sigmoid(r_w - r_l - m)."""
    normalize: Literal["none", "shift", "shift_scale"] = "shift"
    """Bias normalization after training: shift (and scale) scores so the reference set has mean 0 (std 1)."""
    reference_data: Optional[str] = None
    """Demonstrations that define the normalization (None: sft.data)."""
    reference_samples: int = Field(512, ge=1)
    """At most this many reference demonstrations are scored for the normalization (seeded choice)."""
    base: Optional[str] = None
    """Model the reward model starts from (None: model.policy; the pipeline uses the SFT model)."""


class PipelineConfig(Section):
    ground_truth: Optional[str] = "rlhf.data.toy:repeat_digit_reward"
    """Hidden ground-truth scorer 'module:function(prompts, responses)' for the final table (None: no table)."""
    eval_prompts: str = "toy:repeat_digit_eval"
    """Held-out prompts the base, SFT and PPO policies are scored on."""
    eval_samples: int = Field(128, ge=1)
    """Prompts scored per policy."""


class Config(Section):
    run: RunConfig = RunConfig()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    rollout: RolloutConfig = RolloutConfig()
    reward: RewardConfig = RewardConfig()
    ppo: PPOConfig = PPOConfig()
    actors: ActorsConfig = ActorsConfig()
    deepspeed: DeepSpeedConfig = DeepSpeedConfig()
    precision: PrecisionConfig = PrecisionConfig()
    logging: LoggingConfig = LoggingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    sft: SFTConfig = SFTConfig()
    rm: RMConfig = RMConfig()
    pipeline: PipelineConfig = PipelineConfig()
    critic: CriticConfig = CriticConfig()

    @property
    def rollout_batch_size(self) -> int:
        return self.rollout.prompts_per_step * self.rollout.n_samples_per_prompt

    @property
    def uses_critic(self) -> bool:
        return ADVANTAGE_ESTIMATORS[self.ppo.advantage_estimator].uses_critic

    @property
    def cluster_address(self) -> Optional[str]:
        """The Ray cluster a run attaches to: `run.ray_address`, else RAY_ADDRESS (set inside a Ray job and by
        cluster/slurm.sbatch), else None (the run starts a local cluster of its own)."""
        return self.run.ray_address or os.environ.get("RAY_ADDRESS") or None

    @property
    def reference_in_policy(self) -> bool:
        """LoRA with the reference log-probs computed by the policy actors (adapters off): no reference actors."""
        return self.model.lora.enabled and self.model.lora.reference_from_policy

    def active_roles(self) -> list[str]:
        """The roles a PPO run starts (no value role for critic-free estimators, no reference role when the policy
        actors compute the reference log-probs)."""
        skip = {"value"} if not self.uses_critic else set()
        if self.reference_in_policy:
            skip.add("reference")
        return [r for r in ROLES if r not in skip]

    @property
    def run_dir(self) -> Path:
        """`<run.output_dir>/<run.name>`: the one place a run directory's path is built (after `for_stage`)."""
        if self.run.name is None:
            raise ValueError("run.name is unset: pass the config through for_stage(cfg, stage) first")
        return Path(self.run.output_dir).expanduser() / self.run.name

