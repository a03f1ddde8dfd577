#!/usr/bin/env python3
"""Prints the expected values that tests/Transformer/SacrebleuAgreementTests.cs hard-codes, computed by real sacrebleu.

30 real pairs from the shipped translation test splits (15 English → German, 15 English → French, spread over each
split), each with one deterministic perturbation of its reference as the hypothesis. Unrounded scores come from
sacrebleu's API (the CLI rounds to 2 decimals).

Debian bookworm has no python3-sacrebleu, so this ran sacrebleu 2.6.0 from its source tree: mjpost/sacrebleu at
f615c72 unpacked into /tmp/sb (`git archive f615c72 sacrebleu | tar x -C /tmp/sb`, plus a one-line
sacrebleu/version.py, which its build normally generates), on Debian's /usr/bin/python3 with python3-regex,
-tabulate, -portalocker, -colorama, -lxml and -numpy from apt:
  PYTHONPATH=/tmp/sb /usr/bin/python3 tests/Transformer/Reference/sacrebleu_reference.py
"""
import gzip
import json
import os
import unicodedata

import sacrebleu
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "data")


def spread(lang, count):
    with gzip.open(os.path.join(DATA, f"ddtp-en-{lang}.jsonl.gz"), "rt", encoding="utf-8") as f:
        test = [r for r in map(json.loads, f) if r["split"] == "test"]
    return [test[i * len(test) // count] for i in range(count)]


def uncased(s):
    # BertWordPieceTokenizer's normalization: lower-case, NFD, combining marks dropped.
    return "".join(c for c in unicodedata.normalize("NFD", s.lower()) if unicodedata.category(c) != "Mn")


def perturb(i, row):
    ref, words = row["target"], row["target"].split()
    kind = i % 10
    if kind == 0: return ref                                         # exact
    if kind == 1: return " ".join(words[:-1])                        # last word dropped
    if kind == 2: return " ".join(words[1:2] + words[:1] + words[2:])  # first two words swapped
    if kind == 3: return uncased(ref)                                # what an uncased model can write at best
    if kind == 4: return ref + " " + row["source"].split()[-1]       # an English word appended
    if kind == 5: return row["source"]                               # left untranslated
    if kind == 6: return ref.replace(",", "").rstrip(".") + " " + words[0] + " ."  # punctuation changed, a word repeated
    if kind == 7: return ref[: len(ref) // 2]                        # cut mid-word
    if kind == 8: return ""                                          # nothing
    return " ".join(reversed(words))                                 # word order reversed


def cs(s):
    """A C# string literal: JSON's escapes are C#'s; invisible characters (U+0085 ends a C# line) become \\uXXXX."""
    out = json.dumps(s, ensure_ascii=False)
    return "".join(c if c == " " or unicodedata.category(c)[0] not in "CZ" else f"\\u{ord(c):04x}" for c in out)


rows = spread("de", 15) + spread("fr", 15)
hyps = [perturb(i, r) for i, r in enumerate(rows)]
refs = [r["target"] for r in rows]
chrf, chrfpp, bleu, sbleu = CHRF(), CHRF(word_order=2), BLEU(), BLEU(effective_order=True)
print("// (hypothesis, reference, sentence chrF2, sentence chrF2++, sentence BLEU)")
for h, r in zip(hyps, refs):
    print(f"({cs(h)}, {cs(r)}, {chrf.sentence_score(h, [r]).score!r}, {chrfpp.sentence_score(h, [r]).score!r}, {sbleu.sentence_score(h, [r]).score!r}),")
b = bleu.corpus_score(hyps, [refs])
print("// corpus chrF2, chrF2++, BLEU, BLEU counts, totals, sys_len, ref_len")
print(chrf.corpus_score(hyps, [refs]).score, chrfpp.corpus_score(hyps, [refs]).score, b.score, b.counts, b.totals, b.sys_len, b.ref_len)
print("// uncased (both sides normalized): chrF2, BLEU")
uh, ur = [uncased(h) for h in hyps], [uncased(r) for r in refs]
print(chrf.corpus_score(uh, [ur]).score, bleu.corpus_score(uh, [ur]).score)
print("// 13a tokenizations")
tok = Tokenizer13a()
for s in ["Version 3.14, 1,000 files: foo-bar 2-3 (x) &amp; &lt;b&gt; e.g. end.", "a<skipped>b -\nc \"quoted\" [x]{y}~z `q` $5 @home #tag 50% a/b l'école",
          "Bibliothek für C++ (Laufzeit)… « guillemets » – tiret, 1.5.", "tab\there\u00a0nbsp\u2009thin\u001cfs\u0085nel end ."]:
    print(f"({cs(s)}, {cs(tok(s))}),")
print("// several references (sacrebleu's README example; the second stream missing segment 1's)")
hyps2 = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
refs2 = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
         ["The dog had bit the man.", None, "The man had bitten the dog."]]
print(chrf.corpus_score(hyps2, refs2).score, chrfpp.corpus_score(hyps2, refs2).score, bleu.corpus_score(hyps2, refs2).score)
print("// Python whitespace (U+001C, U+0085, U+00A0, U+2009) in chrF2++ and BLEU")
ws_h, ws_r = "Bibliothek\u001cfür\u0085C++ \u00a0Laufzeit\u2009x", "Bibliothek für C++ Laufzeit"
print(chrfpp.sentence_score(ws_h, [ws_r]).score, bleu.corpus_score([ws_h], [[ws_r]]).score)
print("// astral-plane characters count as one character each")
print(chrf.sentence_score("\U0001F600 smile \U0001F600\U0001F601", ["\U0001F600 smiles \U0001F601"]).score)
