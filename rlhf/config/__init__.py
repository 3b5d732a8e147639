"""The one config: its schema (`schema.py`), each stage's rules (`stages.py`), and loading from YAML files and
command-line overrides (`loading.py`). Callers import from `rlhf.config`."""
from .loading import (MOVED_KEYS, build_config, bundled_default, dump_config, load_config, merge_trees,
                      parse_overrides)
from .schema import (ROLES, STAGES, ConfigError, Section, RunConfig, TinyModelConfig, ModelConfig, DataConfig,
                     RolloutConfig, RewardConfig, PPOConfig, RoleResources, ActorsConfig, ZeroSettings,
                     TrainableDeepSpeed, DeepSpeedConfig, PrecisionConfig, LoggingConfig, CheckpointConfig,
                     SupervisedStageConfig, SFTConfig, RMConfig, PipelineConfig, Config)
from .stages import (STAGE_CHECKS, STAGE_ROLES, EngineSettings, ModelSource, engine_settings, for_stage,
                     model_sources)
