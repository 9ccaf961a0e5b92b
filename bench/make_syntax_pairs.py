"""Build the syntax minimal-pair set (backend/kcircuits/data/syntax/minimal_pairs.json) from templates.

Two phenomena, each item a next-token prompt whose grammatical continuation is ``target`` and
whose minimal-pair foil (the other grammatical number) is ``foil``:

- ``det_noun``: determiner-noun number agreement. "{start} this" -> " book" (foil " books");
  "{start} these" -> " books" (foil " book"); this/that singular, these/those plural.
- ``subj_verb``: subject-verb agreement across a prepositional phrase. "The book on the table"
  -> " is" (foil " are"); "The books on the table" -> " are" (foil " is").

Items that share phenomenon, noun and number but differ in the frame (start and determiner, or the
prepositional phrase) form one ``group``: the paraphrase prompts of the KN share filter, as the
templates of an LRE relation are for a fact. The rule is fixed and model-independent; code that
uses the set drops items whose target and foil start with the same token for its tokenizer.

Run: python bench/make_syntax_pairs.py
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "backend" / "kcircuits" / "data" / "syntax" / "minimal_pairs.json"

NOUNS = [("book", "books"), ("car", "cars"), ("dog", "dogs"), ("house", "houses"), ("chair", "chairs"),
         ("table", "tables"), ("apple", "apples"), ("tree", "trees"), ("bird", "birds"), ("key", "keys"),
         ("door", "doors"), ("flower", "flowers"), ("shoe", "shoes"), ("letter", "letters"), ("song", "songs"),
         ("girl", "girls"), ("boy", "boys"), ("cat", "cats"), ("picture", "pictures"), ("window", "windows")]
STARTS = ["She wants to buy", "He carefully cleaned", "We will paint", "They found"]
DETERMINERS = {"sg": ("this", "that"), "pl": ("these", "those")}
PHRASES = ["on the table", "near the old house", "in the small garden", "behind the door"]
VERBS = {"sg": " is", "pl": " are"}


def build() -> list[dict]:
    items = []
    for sg, pl in NOUNS:
        forms = {"sg": sg, "pl": pl}
        for number, other in (("sg", "pl"), ("pl", "sg")):
            group = f"det_noun:{sg}:{number}"
            for start in STARTS:
                for det in DETERMINERS[number]:
                    items.append({"phenomenon": "det_noun", "group": group, "number": number,
                                  "prompt": f"{start} {det}", "target": " " + forms[number],
                                  "foil": " " + forms[other]})
        for number, other in (("sg", "pl"), ("pl", "sg")):
            group = f"subj_verb:{sg}:{number}"
            for phrase in PHRASES:
                items.append({"phenomenon": "subj_verb", "group": group, "number": number,
                              "prompt": f"The {forms[number]} {phrase}", "target": VERBS[number],
                              "foil": VERBS[other]})
    for i, item in enumerate(items):
        item["id"] = i
    return items


def main() -> None:
    items = build()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"rule": "\n\n".join(__doc__.split("\n\n")[:4]).strip(), "items": items}, indent=1) + "\n")
    print(f"wrote {len(items)} items to {OUT}")


if __name__ == "__main__":
    main()
