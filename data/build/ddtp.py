#!/usr/bin/env python3
"""Builds data/ddtp-en-de.jsonl.gz and data/ddtp-en-fr.jsonl.gz: Debian package synopses, English → German / French.

Source: the Debian Description Translation Project's (DDTP) indexes for bookworm main, Translation-de and
Translation-fr, aligned to Translation-en by Description-md5 (the md5 of the English description a translation was
made from, so a stale translation of an older description cannot pair with the current English text).
Packages (bookworm main, amd64) maps binary packages to their source packages for grouping.

Splits never let the summarization task (data/debian-descriptions.jsonl.gz) leak:
  * rows are grouped (union-find) by source package, by the first 80 characters of the normalized English long
    description (the summarization task's own grouping), and by the English synopsis (case-folded): the
    translation source *is* a summarization target, so the same sentence never sits in two splits;
  * the summarization rows join the same union-find (by their package's source package, their prefix and their
    target), so a group inherits the summarization splits it touches: test → test, validation → validation;
    a group touching both test and validation is dropped (it could sit in neither without leaking);
  * groups that touch only summarization train rows go to train; groups the summarization task never saw
    (packages it dropped: transitional, dummy, short descriptions) are hashed into splits at its proportions.

Run (as root: apt writes its lists; a private lists folder keeps the system's untouched):
  python3 data/build/ddtp.py --fetch --lists /tmp/ddtp-lists
"""
import argparse
import collections
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys

LANGS = ("de", "fr")
PREFIX_CHARS = 80   # the summarization task's description-prefix grouping
SUITE = "deb.debian.org_debian_dists_bookworm"


def fetch(lists):
    """apt-get update into a private lists folder, with the DDTP languages enabled."""
    os.makedirs(os.path.join(lists, "partial"), exist_ok=True)
    subprocess.run(["apt-get", "update", "-o", f"Dir::State::Lists={os.path.abspath(lists)}",
                    "-o", "Acquire::Languages=en,de,fr", "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="],
                   check=True)


def read_index(lists, name):
    """An index's text, whatever compression apt stored it with (apt-helper cat-file decompresses)."""
    candidates = [f for f in os.listdir(lists) if f.startswith(f"{SUITE}_main_{name}")]
    if len(candidates) != 1:
        sys.exit(f"expected one {name} index in {lists}, found {candidates}")
    path = os.path.join(lists, candidates[0])
    raw = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], check=True, capture_output=True).stdout
    return raw.decode("utf-8"), hashlib.sha256(raw).hexdigest()


def stanzas(text):
    """deb822 paragraphs as dicts; a continuation line (leading space) extends the previous field."""
    for block in text.split("\n\n"):
        fields, last = {}, None
        for line in block.split("\n"):
            if not line:
                continue
            if line[0] in " \t":
                fields[last] += "\n" + line
            else:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
                last = key
        if fields:
            yield fields


def squash(text):
    return " ".join(text.split())


def split_description(value):
    """(synopsis, long description) as the summarization task normalized them: whitespace collapsed, the
    paragraph-separator lines ' .' dropped, lines joined with single spaces."""
    lines = value.split("\n")
    body = [line.strip() for line in lines[1:] if line.strip() != "."]
    return squash(lines[0]), squash(" ".join(body))


class Groups:
    """Union-find over string keys."""

    def __init__(self):
        self.parent = {}

    def find(self, k):
        self.parent.setdefault(k, k)
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def union(self, keys):
        roots = [self.find(k) for k in keys]
        for r in roots[1:]:
            self.parent[r] = roots[0]


def keys(source_package, long_description, synopsis):
    return [f"src:{source_package}", f"pre:{long_description[:PREFIX_CHARS]}", f"syn:{synopsis.casefold()}"]


def hashed_split(key, validation_share, test_share):
    u = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16) / float(1 << 48)
    return "test" if u < test_share else "validation" if u < test_share + validation_share else "train"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lists", required=True, help="apt lists folder holding the bookworm main indexes")
    ap.add_argument("--fetch", action="store_true", help="run apt-get update into --lists first")
    ap.add_argument("--summarization", default=os.path.join(os.path.dirname(__file__), "..", "debian-descriptions.jsonl.gz"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), ".."))
    args = ap.parse_args()
    if args.fetch:
        fetch(args.lists)

    packages_text, packages_sha = read_index(args.lists, "binary-amd64_Packages")
    source_of = {}
    for s in stanzas(packages_text):
        source_of[s["Package"]] = s.get("Source", s["Package"]).split(" ")[0]   # "Source: name (version)"

    en_text, en_sha = read_index(args.lists, "i18n_Translation-en")
    english = {}   # Description-md5 → (synopsis, long description)
    for s in stanzas(en_text):
        english[s["Description-md5"]] = split_description(s["Description-en"])

    groups = Groups()
    summarization = collections.defaultdict(set)   # group key → summarization splits seen there
    with gzip.open(args.summarization, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    for r in rows:
        ks = keys(source_of.get(r["package"], r["package"]), r["source"], r["target"])
        groups.union(ks)
        summarization[ks[0]].add(r["split"])
    split_share = collections.Counter(r["split"] for r in rows)

    candidates, report = {}, {"Packages sha256": packages_sha, "Translation-en sha256": en_sha}
    for lang in LANGS:
        text, sha = read_index(args.lists, f"i18n_Translation-{lang}")
        report[f"Translation-{lang} sha256"] = sha
        dropped = collections.Counter()
        kept = []
        for s in stanzas(text):
            dropped["entries"] += 1
            md5 = s["Description-md5"]
            if md5 not in english:
                dropped["no English description with that md5"] += 1
                continue
            synopsis, long_description = english[md5]
            target, _ = split_description(s[f"Description-{lang}"])
            if not target or not synopsis:
                dropped["empty synopsis"] += 1
                continue
            if target.casefold() == synopsis.casefold():
                dropped["untranslated (target = source, ignoring case)"] += 1
                continue
            package = s["Package"]
            ks = keys(source_of.get(package, package), long_description, synopsis)
            groups.union(ks)
            kept.append({"source": synopsis, "target": target, "package": package, "lang": lang, "_key": ks[0],
                         "source_package": source_of.get(package, package)})
        candidates[lang] = (kept, dropped)

    # Which summarization splits each group touches (after all unions: a key's set moves to its root).
    touched = collections.defaultdict(set)
    for k, splits in summarization.items():
        touched[groups.find(k)] |= splits
    n = sum(split_share.values())
    for lang, (kept, dropped) in candidates.items():
        out, seen, counts, origin = [], set(), collections.Counter(), collections.Counter()
        for row in sorted(kept, key=lambda r: (r["package"], r["source"], r["target"])):
            root = groups.find(row.pop("_key"))
            splits = touched.get(root, set())
            if {"test", "validation"} <= splits:
                dropped["group touches summarization test and validation"] += 1
                continue
            split = "test" if "test" in splits else "validation" if "validation" in splits else "train" if splits \
                else hashed_split(root, split_share["validation"] / n, split_share["test"] / n)
            how = "from the summarization split" if splits else "hashed (group unseen by the summarization task)"
            pair = (row["source"], row["target"])
            if pair in seen:
                dropped["duplicate pair"] += 1
                continue
            seen.add(pair)
            counts[split] += 1
            origin[f"{split}, {how}"] += 1
            out.append({"source": row["source"], "target": row["target"], "split": split, "package": row["package"],
                        "source_package": row["source_package"], "lang": lang})
        path = os.path.join(args.out, f"ddtp-en-{lang}.jsonl.gz")
        # mtime=0 and a fixed file name inside: the same input gives byte-identical output.
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            with io.TextIOWrapper(gz, encoding="utf-8") as w:
                for row in out:
                    w.write(json.dumps(row, ensure_ascii=False) + "\n")
        report[f"en-{lang}"] = {"pairs": len(out), **{s: counts[s] for s in ("train", "validation", "test")},
                                "origin": dict(sorted(origin.items())), "dropped": dict(dropped), "bytes": os.path.getsize(path)}
    print(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
