"""A real Hugging Face tokenizer folder made in the tests: byte-level BPE, saved by transformers."""

from __future__ import annotations

from pathlib import Path


def save_byte_bpe(texts, folder: Path, vocab_size: int, extra_special_tokens: tuple[str, ...] = ()) -> Path:
    """Train byte-level BPE on `texts` (eos "<|endoftext|>", and any `extra_special_tokens`) and save
    it as a transformers folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", *extra_special_tokens], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                            additional_special_tokens=list(extra_special_tokens)).save_pretrained(str(folder))
    return folder
