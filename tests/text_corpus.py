"""A deterministic corpus of hard strings for tokenizer parity tests.

`corpus_lines(n, seed)` mixes fixed edge cases (empty text, whitespace runs, emoji ZWJ
sequences, CJK, combining accents, control characters, special tokens inside text, very
long words) with seeded random combinations of fragments from many scripts, so every
tokenizer under test sees the same >= 5,000 varied lines.
"""

from __future__ import annotations

import random

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]",
                  "<s>", "</s>", "<unk>", "<mask>", "<think>", "hello world"]

EDGE_CASES = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", " \n ", "\u00a0", "\u3000", "\u2003", "a\u00a0b",
    " leading", "trailing ", "  both  ", "multiple   spaces   here", "tabs\tand\ttabs", "line\nbreak\r\nwindows",
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷🇯🇵", "❤️", "🫠", "a😀b", " 😀 ", "😀😀😀",
    "中文字符", "日本語のテキストです。", "한국어 텍스트", "مرحبا بالعالم", "नमस्ते दुनिया", "Привет, мир!", "Ελληνικά ΟΔΟΣ",
    "café", "cafe\u0301", "naïve résumé", "Ångström", "ﬁ ligature", "Ⅻ ① ²", "İstanbul", "straße STRASSE",
    "don't", "I'm", "we've", "they'll", "she'd", "it's", "IT'S", "DON'T", "O'Neil's", "rock'n'roll",
    "1234567890", "3.14159", "1,000,000", "0x1F", "12345678901234567890123456789", "v1.2.3-rc4", "-42", "1e-10",
    "https://example.com/path?q=1&r=2#frag", "user@example.com", "C:\\Windows\\System32",
    "def f(x):\n    return x ** 2\n", "if (a && b) { c(); }", "<div class=\"x\">y</div>", "SELECT * FROM t;",
    "!!!", "???", "...", "---", "!?!?", "(([[{{}}]]))", "@#$%^&*", "~`|\\", "\"quoted\"", "'single'",
    "\x00", "\x01\x02", "a\x07b", "\x1b[31mred\x1b[0m", "\ufeffbom", "zero\u200bwidth", "\u200d", "\ufffd", "\x7f",
    "\x85", "\x1c\x1d\x1e\x1f", "\u2028\u2029", "soft\u00adhyphen", "\ue000private",
    "hi<|im_end|>there", "<|im_start|>user\nHi<|im_end|>\n", "<|endoftext|>", "a<|endoftext|>b",
    "[CLS] x [SEP]", "[CLS]x[SEP]", "[MASK]", "the [MASK] sat", "<s> hi </s>", "hello world", "say hello world!",
    "hellohello world", "x <mask> y", "x<mask>y", "<think>deep</think>", "  <mask>  ",
    "a" * 101, "b" * 150, "supercalifragilisticexpialidocious" * 4, "ab" * 300, " " * 50, "\n" * 20, "9" * 200,
    "😀" * 40, "字" * 120,
]

FRAGMENTS = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "Hello", "WORLD", "tokenizer", "unbelievable",
    "antidisestablishmentarianism", "GPT", "BERT", "Qwen", "SmolLM", "ONNX", "int8", "naïve", "façade", "Zürich",
    "東京", "北京市", "こんにちは", "カタカナ", "서울", "القاهرة", "हिन्दी", "Ελλάδα", "Москва", "ไทย", "עברית",
    "😀", "🚀", "👩‍💻", "🇺🇸", "✌🏿", "🔥🔥", "∑∫√", "€£¥", "°C", "½", "™", "→", "…", "—", "«»", "“quotes”",
    "'s", "'ve", "n't", "'ll", "'re", "'d", "'m", "'S", "N'T", "123", "4567", "3.5", "2024-01-01", "12:30",
    "x=1;", "foo()", "a_b_c", "camelCase", "snake_case", "#include", "//comment", "/* c */", "=>", "!=", "::",
    ",", ".", "!", "?", ";", ":", "-", "(", ")", "\"", "'", "`", "$", "%", "&", "*", "+", "/", "<", ">", "@", "^",
    "|", "~", "[", "]", "{", "}", "\\", "<|im_end|>", "<|endoftext|>", "[SEP]", "[CLS]", "<mask>", "[MASK]", "<s>",
]
SEPARATORS = [" ", " ", " ", " ", "", "  ", "\t", "\n", "\r\n", " \n", "\u00a0", "\u3000", "   ", "\n\n"]
PARAGRAPH = ("Tokenizers turn text into numbers. A byte-level BPE never fails: every byte has a token, "
             "so emoji 🤖, CJK 字, and accents (é, ñ) all survive the round trip. WordPiece lowercases, "
             "strips accents and splits unknown words into ##pieces, or gives [UNK] after 100 characters. ")


def _random_line(rng: random.Random) -> str:
    words = [rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 12))]
    line = words[0]
    for word in words[1:]:
        line += rng.choice(SEPARATORS) + word
    if rng.random() < 0.2:
        line = rng.choice(SEPARATORS) + line
    if rng.random() < 0.2:
        line += rng.choice(SEPARATORS)
    return line


def _random_chars(rng: random.Random) -> str:
    """Characters drawn from across the Basic and Supplementary planes, surrogates excluded."""
    ranges = [(0x20, 0x7E), (0x00, 0x20), (0xA0, 0x2FF), (0x300, 0x36F), (0x370, 0x52F), (0x600, 0x6FF), (0x900, 0x97F),
              (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0xE000, 0xE0FF)]
    out = []
    for _ in range(rng.randint(1, 20)):
        low, high = rng.choice(ranges)
        out.append(chr(rng.randint(low, high)))
    return "".join(out)


def _paragraph(rng: random.Random) -> str:
    sentences = [_random_line(rng) for _ in range(rng.randint(5, 15))]
    return PARAGRAPH * rng.randint(1, 4) + ". ".join(sentences)


def corpus_lines(n: int = 5000, seed: int = 0) -> list[str]:
    """`n` lines: the fixed edge cases first, then seeded random lines (about 1 in 10 random
    characters, 1 in 50 long paragraphs)."""
    rng = random.Random(seed)
    lines = list(EDGE_CASES)
    while len(lines) < n:
        roll = rng.random()
        if roll < 0.02:
            lines.append(_paragraph(rng))
        elif roll < 0.12:
            lines.append(_random_chars(rng))
        else:
            lines.append(_random_line(rng))
    return lines[:n]
