"""Write a tiny, random-weight, llama-architecture GGUF model for tests.

Nothing is downloaded: the byte-level BPE tokenizer is trained with ``tokenizers`` on the
paragraphs embedded below, and every weight comes from a seeded numpy generator, so the
same ``seed`` always produces a byte-identical file.

The weights are random, but two properties are engineered so that tests can rely on them:

* Hidden dimension 0 of the residual stream is a constant (every token embedding has
  ``_ANCHOR`` there and no attention/feed-forward block writes to it). After the final
  RMS norm that dimension is always clearly positive, so giving an output row a large
  negative weight on it suppresses that token for every input.
* That trick suppresses the special tokens (so generation never stops early on EOS and
  never emits template markers) and every token that does not decode to printable ASCII
  (so generated text is never empty after UTF-8 clean-up). Greedy decoding therefore
  always produces ``max_tokens`` tokens of printable text; ``finish_reason`` is
  ``"length"`` unless the caller passes a ``stop`` sequence.
"""

from __future__ import annotations

import json
import pathlib
from typing import Final

import gguf
import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ARCHITECTURE: Final = "llama"
HIDDEN_SIZE: Final = 64
N_LAYERS: Final = 2
N_HEADS: Final = 4
N_KV_HEADS: Final = 4
HEAD_DIM: Final = HIDDEN_SIZE // N_HEADS
FEED_FORWARD_LENGTH: Final = 128
CONTEXT_LENGTH: Final = 256
TARGET_VOCAB_SIZE: Final = 400
RMS_NORM_EPS: Final = 1e-5

BOS_TOKEN: Final = "<|bos|>"
EOS_TOKEN: Final = "<|endoftext|>"
TURN_START_TOKEN: Final = "<|turn|>"
TURN_END_TOKEN: Final = "<|end|>"
SPECIAL_TOKENS: Final = (BOS_TOKEN, EOS_TOKEN, TURN_START_TOKEN, TURN_END_TOKEN)

# A deliberately unique template (so llama-cpp-python does not map it onto one of its
# built-in chat formats and really renders it with Jinja). Message content may be a string
# or a list of OpenAI content parts; only text parts are rendered.
CHAT_TEMPLATE: Final = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|turn|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% elif message['content'] %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|turn|>assistant\n{% endif %}"
)

_ANCHOR: Final = 4.0
_SUPPRESS: Final = -64.0

_CORPUS: Final = (
    "A gateway stands between the people who ask questions and the models that answer "
    "them. Every request is checked: who is calling, what they are allowed to do, and "
    "whether the answer may leave the building. Nothing is trusted because of where it "
    "comes from; everything is verified because of what it is.",
    "The river ran past the old mill at the bottom of the valley. In the spring the water "
    "was high and brown, and the children watched the logs turn slowly in the current. In "
    "the summer it was low and clear, and you could see the stones on the bottom and the "
    "small fish that hid in the shadows between them.",
    "To make bread, mix the flour with water, salt and a little yeast. Knead the dough for "
    "ten minutes until it is smooth, then leave it in a warm place for an hour. Shape it, "
    "let it rise again, and bake it in a hot oven until the crust is dark and the loaf "
    "sounds hollow when you tap it.",
    "Tests should be fast, deterministic and honest. A test that passes when the code is "
    "broken is worse than no test at all, because it tells a comforting lie. Start the "
    "real server, send the real request, read the real answer, and then shut everything "
    "down again so that the next test starts from a clean slate.",
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
    "How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow. The five "
    "boxing wizards jump quickly. 0 1 2 3 4 5 6 7 8 9, and then 10, 20, 100 and 1000.",
    "Hello! How are you today? I am fine, thank you. What would you like to talk about? "
    "We could talk about the weather, the news, a good book, or the model that is "
    "answering you right now, which is very small and knows almost nothing at all.",
    "When the lights went out in the city, people came out of their houses and looked up. "
    "For the first time in years they could see the stars: thousands of them, scattered "
    "across the sky like salt on a dark table, and the faint band of the galaxy above.",
)


def train_tokenizer() -> Tokenizer:
    """Train the byte-level BPE tokenizer on the embedded corpus (deterministic, offline)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TARGET_VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(_CORPUS), trainer=trainer)
    return tokenizer


def _vocab_and_merges(tokenizer: Tokenizer) -> tuple[list[str], list[str]]:
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    if any(not token for token in tokens):
        raise RuntimeError("tokenizer vocabulary ids are not contiguous")
    raw_merges = json.loads(tokenizer.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in raw_merges]
    return tokens, merges


def _allowed_output(tokenizer: Tokenizer, token_id: int, token: str) -> bool:
    if token in SPECIAL_TOKENS:
        return False
    text = tokenizer.decode([token_id], skip_special_tokens=False)
    return bool(text) and text.isascii() and text.isprintable()


def write_tiny_gguf(path: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """Write the tiny model to ``path`` (parent directories are created) and return ``path``.

    Architecture: llama, ``N_LAYERS`` blocks, hidden ``HIDDEN_SIZE``, ``N_HEADS`` heads,
    feed-forward ``FEED_FORWARD_LENGTH``, trained context ``CONTEXT_LENGTH``, all tensors F32.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    tokenizer = train_tokenizer()
    tokens, merges = _vocab_and_merges(tokenizer)
    n_vocab = len(tokens)
    token_types = [
        gguf.TokenType.CONTROL if token in SPECIAL_TOKENS else gguf.TokenType.NORMAL
        for token in tokens
    ]
    rng = np.random.default_rng(seed)

    def normal(shape: tuple[int, ...], std: float) -> np.ndarray:
        return rng.normal(0.0, std, size=shape).astype(np.float32)

    # numpy shapes are (rows, cols) = reversed ggml ne; e.g. attn_q is ne=[n_embd, n_q].
    tensors: dict[str, np.ndarray] = {}
    token_embd = normal((n_vocab, HIDDEN_SIZE), 1.0)
    token_embd[:, 0] = _ANCHOR
    tensors["token_embd.weight"] = token_embd
    attn_scale = 1.0 / np.sqrt(HIDDEN_SIZE)
    ffn_scale = 1.0 / np.sqrt(FEED_FORWARD_LENGTH)
    for layer in range(N_LAYERS):
        prefix = f"blk.{layer}"
        tensors[f"{prefix}.attn_norm.weight"] = np.ones(HIDDEN_SIZE, dtype=np.float32)
        tensors[f"{prefix}.attn_q.weight"] = normal((N_HEADS * HEAD_DIM, HIDDEN_SIZE), attn_scale)
        tensors[f"{prefix}.attn_k.weight"] = normal(
            (N_KV_HEADS * HEAD_DIM, HIDDEN_SIZE), attn_scale
        )
        tensors[f"{prefix}.attn_v.weight"] = normal(
            (N_KV_HEADS * HEAD_DIM, HIDDEN_SIZE), attn_scale
        )
        attn_output = normal((HIDDEN_SIZE, N_HEADS * HEAD_DIM), attn_scale)
        attn_output[0, :] = 0.0  # keep the anchor dimension constant
        tensors[f"{prefix}.attn_output.weight"] = attn_output
        tensors[f"{prefix}.ffn_norm.weight"] = np.ones(HIDDEN_SIZE, dtype=np.float32)
        tensors[f"{prefix}.ffn_gate.weight"] = normal(
            (FEED_FORWARD_LENGTH, HIDDEN_SIZE), attn_scale
        )
        tensors[f"{prefix}.ffn_up.weight"] = normal((FEED_FORWARD_LENGTH, HIDDEN_SIZE), attn_scale)
        ffn_down = normal((HIDDEN_SIZE, FEED_FORWARD_LENGTH), ffn_scale)
        ffn_down[0, :] = 0.0  # keep the anchor dimension constant
        tensors[f"{prefix}.ffn_down.weight"] = ffn_down
    tensors["output_norm.weight"] = np.ones(HIDDEN_SIZE, dtype=np.float32)
    output = normal((n_vocab, HIDDEN_SIZE), 3.0 / np.sqrt(HIDDEN_SIZE))
    output[:, 0] = 0.0
    for token_id, token in enumerate(tokens):
        if not _allowed_output(tokenizer, token_id, token):
            output[token_id, 0] = _SUPPRESS
    tensors["output.weight"] = output

    writer = gguf.GGUFWriter(path, ARCHITECTURE)
    try:
        writer.add_name("garrison-tiny-random")
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_block_count(N_LAYERS)
        writer.add_context_length(CONTEXT_LENGTH)
        writer.add_embedding_length(HIDDEN_SIZE)
        writer.add_feed_forward_length(FEED_FORWARD_LENGTH)
        writer.add_head_count(N_HEADS)
        writer.add_head_count_kv(N_KV_HEADS)
        writer.add_rope_dimension_count(HEAD_DIM)
        writer.add_layer_norm_rms_eps(RMS_NORM_EPS)
        writer.add_vocab_size(n_vocab)
        writer.add_pooling_type(gguf.PoolingType.MEAN)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt-2")
        writer.add_token_list(tokens)
        writer.add_token_types(token_types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(tokens.index(BOS_TOKEN))
        writer.add_eos_token_id(tokens.index(EOS_TOKEN))
        writer.add_add_bos_token(False)
        writer.add_chat_template(CHAT_TEMPLATE)
        for name, tensor in tensors.items():
            writer.add_tensor(name, tensor)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path
