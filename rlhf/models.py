"""Model loading and export: any HF causal LM, a scalar-head model for reward and value, the tiny-model factory
(random Llama + offline character tokenizer) used by tests and the default run, and export to HF format."""
from __future__ import annotations

import os
import shutil
import string
import tempfile
from pathlib import Path

import torch
from torch import nn

PAD, EOS, BOS, UNK = "<pad>", "</s>", "<s>", "<unk>"
TINY_CHARS = string.digits + string.ascii_lowercase + string.ascii_uppercase + " .,:;!?+-*/=()'\"\n_#<>[]{}|`"
TINY_VOCAB = [PAD, EOS, BOS, UNK, *TINY_CHARS]      # token id = position
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def quiet_transformers() -> None:
    """No per-file progress bars or init warnings from transformers inside workers."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


class ModelLoadError(ValueError):
    """A model path that cannot be loaded, worded as one line."""


def build_char_tokenizer():
    """A character-level fast tokenizer built offline: one token per character of TINY_CHARS, plus pad/eos/bos/unk."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(TINY_VOCAB)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, bos_token=BOS,
                                        unk_token=UNK, padding_side="left")
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def _atomic_dir(target: Path, write) -> Path:
    """Write a folder through a temporary sibling and rename it into place, so readers never see half of it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tiny_config(num_layers: int = 2, hidden_size: int = 64, num_heads: int = 4):
    """The LlamaConfig of the tiny model (vocabulary: the char tokenizer's), without building anything."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(TINY_VOCAB), hidden_size=hidden_size, intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=512, pad_token_id=TINY_VOCAB.index(PAD), eos_token_id=TINY_VOCAB.index(EOS),
        bos_token_id=TINY_VOCAB.index(BOS), tie_word_embeddings=False,
    )


def make_tiny_model(folder: str | Path, num_layers: int = 2, hidden_size: int = 64, num_heads: int = 4,
                    seed: int = 0) -> Path:
    """Write a random tiny Llama causal LM and its char tokenizer to `folder` (HF format); returns the folder."""
    from transformers import LlamaForCausalLM

    quiet_transformers()
    tokenizer = build_char_tokenizer()
    config = tiny_config(num_layers, hidden_size, num_heads)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)

    def write(tmp: Path):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _atomic_dir(Path(folder), write)


def resolve_model_path(name: str, cache_dir: str, tiny=None, key: str = "model") -> str:
    """'tiny' -> the cached tiny model folder (made on first use); a local path with ~ expanded, checked to exist and
    to hold a Hugging Face model (errors name the config `key`); a hub name ('org/name') unchanged."""
    if name != "tiny":
        from .data.loading import looks_local, missing_path_error

        path = os.path.expanduser(name)
        if os.path.exists(path):
            if not (Path(path) / "config.json").is_file():
                raise ModelLoadError(f"{key}: {path} holds no config.json (not a Hugging Face model folder)")
        elif looks_local(name):
            raise ModelLoadError(missing_path_error(name, key))
        return path
    shape = (tiny.num_layers, tiny.hidden_size, tiny.num_heads) if tiny else (2, 64, 4)
    # the vocabulary's size is in the name: a model cached before the vocabulary grew is not reused
    folder = Path(cache_dir).expanduser() / "tiny-llama-{}x{}h{}-v{}".format(*shape, len(TINY_VOCAB))
    if not (folder / "config.json").exists():
        make_tiny_model(folder, *shape)
    return str(folder)


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' is bf16 on CUDA and fp32 on CPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def default_device() -> torch.device:
    """The device a process computes on: its (first visible) GPU, else the CPU."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def attention_kernel(choice: str, device: torch.device) -> str:
    """`precision.attention` for models on `device`: 'auto' is SDPA on GPU, the eager (matmul) attention on CPU."""
    if choice == "auto":
        return "sdpa" if device.type == "cuda" else "eager"
    return choice


def apply_cpu_matmul(choice: str, device: torch.device) -> None:
    """`precision.cpu_matmul` for this process: 'bf16' runs fp32 matmuls on CPU through oneDNN's bf16 kernels."""
    if device.type == "cpu" and choice == "bf16":
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"


def disable_dropout(model: nn.Module) -> nn.Module:
    """PPO needs the same function at rollout and training time: every dropout is set to p = 0."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def _load_errors() -> tuple:
    """What a loader raises for a model it cannot read: bad paths and configs, and corrupt weight files."""
    from safetensors import SafetensorError

    return OSError, ValueError, SafetensorError


def _load_failure(path: str, error: Exception) -> str:
    """The first line of a loader's error; for a name that is not on disk, say that first (offline, the hub
    lookup's own message is about the hub, not about the missing folder)."""
    first = (str(error).splitlines() or [type(error).__name__])[0]
    return first if os.path.exists(path) else f"no such file or directory, and not loadable as a hub model ({first})"


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load tokenizer from {path!r}: {_load_failure(path, error)}") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str, dtype: torch.dtype = torch.float32, attention: str = "sdpa"):
    """Any HF causal LM, dropout disabled, with the `attention` kernel (`attention_kernel`)."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attention)
    except _load_errors() as error:
        raise ModelLoadError(f"cannot load causal LM from {path!r}: {_load_failure(path, error)}") from None
    return disable_dropout(model)


def load_scalar_model(path: str, dtype: torch.dtype = torch.float32, attention: str = "sdpa"):
    """An HF model with a scalar head on every token (AutoModelForTokenClassification, num_labels=1).

    Loaded from a causal-LM checkpoint the head is new; loaded from a saved reward/value model it is restored.
    The reward is the head's output at the last real token; the value is its output at every token.
    """
    from transformers import AutoConfig, AutoModelForTokenClassification

    quiet_transformers()
    try:
        config = AutoConfig.from_pretrained(path, num_labels=1)
        config.classifier_dropout = 0.0
        model = AutoModelForTokenClassification.from_pretrained(path, config=config, dtype=dtype,
                                                                attn_implementation=attention)
    except _load_errors() as error:
        raise ModelLoadError(f"cannot load scalar-head model from {path!r}: {_load_failure(path, error)}") from None
    return disable_dropout(model)


NORMALIZATION_FILE = "reward_normalization.json"


def save_reward_normalization(folder: str | Path, shift: float, scale: float, reference: str) -> None:
    """Bias normalization of a reward model, stored beside its weights: score' = (score - shift) / scale."""
    import json

    (Path(folder) / NORMALIZATION_FILE).write_text(json.dumps({"shift": shift, "scale": scale,
                                                               "reference": reference}, indent=1))


def load_reward_normalization(folder: str | Path) -> tuple[float, float]:
    """(shift, scale) saved with a reward model, or (0, 1) when it has none."""
    import json

    path = Path(folder) / NORMALIZATION_FILE
    if not path.exists():
        return 0.0, 1.0
    data = json.loads(path.read_text())
    return float(data["shift"]), float(data["scale"])


def export_hf(model: nn.Module, tokenizer, folder: str | Path, state_dict: dict | None = None) -> Path:
    """save_pretrained (safetensors) + tokenizer into `folder`, atomically; loadable by transformers."""

    def write(tmp: Path):
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)

    return _atomic_dir(Path(folder), write)


def export_adapter(model: nn.Module, adapter_state: dict, folder: str | Path, base_path: str | None) -> Path:
    """A PEFT model's adapter (`adapter_state`: PEFT's names) into `folder`, atomically, naming `base_path` as its
    base: `PeftModel.from_pretrained(base, folder)` rebuilds the trained model."""

    def write(tmp: Path):
        config = model.peft_config["default"]
        config.base_model_name_or_path = base_path
        config.save_pretrained(tmp)
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in adapter_state.items()}, tmp / "adapter_model.safetensors")

    return _atomic_dir(Path(folder), write)
