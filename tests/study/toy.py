"""Toy-size local checkpoints of the study's real architectures (Llama, Mistral, Phi), built offline.

The tokenizer is a tiny byte-level BPE trained on synthetic sentences with the
``tokenizers`` library; the models are randomly initialised from ``LlamaConfig``,
``MistralConfig`` and ``PhiConfig`` with the real module names (q_proj, gate_proj,
dense, fc1 …) at a size that trains and generates in seconds on two CPU cores.
"""

from __future__ import annotations

import random
from pathlib import Path

SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "a robot", "the river", "our team", "the old man"]
VERBS = ["likes", "sees", "builds", "paints", "finds", "writes", "carries", "counts"]
OBJECTS = ["a red apple", "the blue sky", "three small boxes", "a long letter", "the green tree", "two bright stars"]
PLACES = ["in the park", "at home", "near the sea", "on the hill", "in the city", "by the road"]

#: small enough for seconds on 2 cores, big enough for every projection to exist
DIMS = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 256}


def sentences(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        out.append(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}.".capitalize())
    return out


def build_tokenizer(out_dir: Path, vocab_size: int = 512):
    """A byte-level BPE tokenizer with <s>, </s>, <pad>, <unk>, saved as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    corpus = sentences() + ["Below is an instruction that describes a task. Write a response that appropriately completes the request.",
                            "### Instruction:", "### Input:", "### Response:"]
    tok.train_from_iterator(corpus, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=DIMS["max_position_embeddings"], padding_side="left",
    )
    fast.save_pretrained(out_dir)
    return fast


def build_checkpoint(arch: str, out_dir: Path, seed: int = 0) -> Path:
    """Save a randomly initialised ``arch`` ('llama', 'mistral' or 'phi') model plus tokenizer into ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, PhiConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out_dir)
    common = dict(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        **DIMS,
    )
    if arch == "llama":
        config = LlamaConfig(num_key_value_heads=2, rms_norm_eps=1e-5, **common)
    elif arch == "mistral":
        config = MistralConfig(num_key_value_heads=2, sliding_window=None, rms_norm_eps=1e-5, **common)
    elif arch == "phi":
        config = PhiConfig(partial_rotary_factor=0.5, **common)
    else:
        raise ValueError(arch)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir
