"""Class-name normalisation and class-list readers for zero-shot embeddings.

The recipe follows Brattoli et al., "Rethinking Zero-shot Video
Classification" (CVPR 2020): a class name becomes a list of words whose word
vectors are averaged. Rules, applied in this order by `class_words`:

1. an override table entry (class name -> words) wins over everything;
2. Kinetics disambiguations are cut at "(not" ("hugging (not baby)" ->
   "hugging"); other parentheses are dropped but their words kept
   ("curling (sport)" -> "curling sport");
3. underscores (HMDB51, ActivityNet) and hyphens become spaces; a possessive
   "'s" is dropped ("massaging person's head" -> "massaging person head");
4. CamelCase is split (UCF101 "ApplyEyeMakeup" -> "apply eye makeup");
5. words are lower-cased and `STOPWORDS` are dropped.

Unlike the authors' code we do not lemmatise verbs with WordNet (no NLTK
dependency); GloVe and word2vec both hold the inflected forms, so "brushing"
keeps its own vector.
"""

import json
import pathlib
import re

from klassterfork.files import write_text_atomic

# The authors' stopword list (their Kinetics/ActivityNet embedding code).
STOPWORDS = frozenset(
    ["a", "an", "the", "of", "and", "or", "at", "on", "in", "do", "using", "with"]
)

# "ApplyEyeMakeup" -> Apply Eye Makeup; "YoYo" -> Yo Yo; "UFOLanding" ->
# UFO Landing; digits stay one token.
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_NOT = re.compile(r"\(\s*not\b", re.IGNORECASE)


def split_camel_case(token):
    """Splits one CamelCase token: "ApplyEyeMakeup" -> ["Apply", "Eye", "Makeup"].

    Args:
        token: str. One token without spaces.

    Returns:
        list of str, the parts in order; letters that are neither cased runs
        nor digits (e.g. an apostrophe) are dropped.
    """
    return _CAMEL.findall(token)


def class_words(name, overrides=None):
    """The words whose vectors make up the embedding of class `name`.

    Args:
        name: str. The class name as the dataset spells it.
        overrides: dict or None. Class name -> list of words; an entry replaces
            the rules below for that class. Defaults to None (no table).

    Returns:
        list of str, lower-cased, in name order; may be empty (e.g. a name
        made only of stopwords).
    """
    if overrides and name in overrides:
        return [w.lower() for w in overrides[name]]
    text = _NOT.split(name, maxsplit=1)[0]
    text = text.replace("(", " ").replace(")", " ")
    text = re.sub(r"[_\-/]", " ", text)
    text = re.sub(r"'s\b", "", text)
    words = []
    for token in text.split():
        words.extend(part.lower() for part in split_camel_case(token))
    return [w for w in words if w not in STOPWORDS]


def _numbered(lines, pattern, path, base):
    """Orders `index<sep>name` lines by index; indices must be base..base+n-1."""
    rows = [pattern.match(line) for line in lines]
    indexed = sorted((int(m.group(1)), m.group(2).strip()) for m in rows)
    indices = [i for i, _ in indexed]
    expected = list(range(indices[0], indices[0] + len(indices)))
    if indices[0] not in base or indices != expected:
        raise ValueError(
            f"{path}: class indices must be contiguous from 0 or 1 without "
            f"repeats. Received indices {indices[:10]}..."
        )
    return [n for _, n in indexed]


_LABELS_TXT = re.compile(r"^(\d+),(.+)$")  # converter labels.txt: "0,name"
_CLASS_IND = re.compile(r"^(\d+)\s+(\S.*)$")  # UCF101 classInd: "1 Name"
_ID_COLON = re.compile(r"^(\d+):\s*(\S.*)$")  # AVA label map: "1: name"


def read_class_list(path, dataset=None):
    """Reads an ordered class-name list (index = class id).

    Accepted formats, detected from the content:
    - `.json`: `{dataset: [names]}` (like `wordvec/classnames.json`; needs
      `dataset`) or a plain list of names;
    - `index,name` lines (the converter's `labels.txt`);
    - `index name` lines (UCF101 `classInd.txt`, 1-based, CRLF allowed);
    - `index: name` lines (AVA);
    - one name per line (mmaction2 `label_map*.txt`, HMDB51 `class_list.txt`).

    Args:
        path: str or Path. The class-list file.
        dataset: str or None. The key to read from a json mapping.

    Returns:
        list of str, the class names ordered by class id.

    Raises:
        ValueError: unreadable format, missing dataset key, repeated or
            non-contiguous indices, or no names.
    """
    path = pathlib.Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            if dataset not in data:
                raise ValueError(
                    f"{path}: `dataset` must be one of {sorted(data)}. "
                    f"Received: dataset={dataset!r}"
                )
            data = data[dataset]
        if not (
            isinstance(data, list) and data and all(isinstance(n, str) for n in data)
        ):
            raise ValueError(
                f"{path}: expected a non-empty list of class "
                f"names (or a mapping dataset -> list)."
            )
        return list(data)
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"{path}: no class names in the file.")
    for pattern, base in (
        (_LABELS_TXT, (0,)),
        (_ID_COLON, (0, 1)),
        (_CLASS_IND, (0, 1)),
    ):
        if all(pattern.match(line) for line in lines):
            return _numbered(lines, pattern, path, base)
    return lines


def write_labels_txt(path, names):
    """Writes `index,name` lines (the converter's `labels.txt`) atomically.

    Args:
        path: str or Path. Output file.
        names: list of str, index = class id.
    """
    atomic_write_text(path, "".join(f"{i},{n}\n" for i, n in enumerate(names)))


atomic_write_text = write_text_atomic  # the name the zero-shot tools import
