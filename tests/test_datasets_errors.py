"""Malformed LIBSVM input: one DatasetFormatError naming file and line; no dataset, no cache entry."""
import pytest
import torch

D = pytest.importorskip("precond_core.datasets")

GOOD = "1 1:0.5 3:2\n-1 2:1\n"   # two valid lines first, so the reported line numbers are checked past 1


pytestmark = pytest.mark.usefixtures("data_dir")   # tests/conftest.py: an empty, isolated data directory


# (id, text, load options, expected line (None: whole file), message fragment)
CASES = [
    ("non_numeric_value", GOOD + "1 1:abc\n", {}, 3, "non-numeric value 'abc'"),
    ("nan_value", GOOD + "1 1:nan\n", {}, 3, "non-numeric value 'nan'"),
    ("overflow_value", GOOD + "1 1:1e999\n", {}, 3, "non-finite"),
    ("index_zero", GOOD + "1 0:1 2:1\n", {}, 3, "positive integer"),
    ("negative_index", GOOD + "1 -3:1\n", {}, 3, "positive integer (indices are 1-based), got -3"),
    ("non_integer_index", GOOD + "1 1.5:1\n", {}, 3, "is not an integer"),
    ("out_of_order", GOOD + "1 3:1 2:1\n", {}, 3, "index 2 follows index 3"),
    ("repeated_index", GOOD + "1 2:1 2:4\n", {}, 3, "index 2 is repeated"),
    ("repeated_zero_valued", GOOD + "1 2:0 2:4\n", {}, 3, "index 2 is repeated"),
    ("missing_label", GOOD + "1:1 2:1\n", {}, 3, "missing label"),
    ("blank_line", "1 1:1\n\n-1 2:1\n", {}, 2, "missing label (blank line)"),
    ("non_numeric_label", GOOD + "yes 1:1\n", {}, 3, "label 'yes' is not a number"),
    ("entry_without_colon", GOOD + "1 1:1 7\n", {}, 3, "entry '7' is not of the form index:value"),
    ("double_colon", GOOD + "1 1:1:2\n", {}, 3, "entry '1:1:2'"),
    ("space_after_colon", GOOD + "1 1: 2\n", {}, 3, "non-numeric value '' for feature 1"),
    ("qid_token", GOOD + "1 qid:3 1:1\n", {}, 3, "is not an integer"),
    ("non_ascii", GOOD + "1 1:1\u00e9\n", {}, 3, "non-ASCII"),
    ("empty_file", "", {}, None, "empty"),
    ("only_newline", "\n", {}, 1, "missing label"),
    ("three_labels_binary", GOOD + "2 1:1\n", {"task": "binary"}, 3, "exactly two label values"),
    ("one_label_binary", "1 1:1\n1 2:1\n", {"task": "binary"}, None, "two label values"),
    ("fractional_multiclass", GOOD + "0.5 1:1\n", {"task": "multiclass"}, 3, "integer labels"),
    ("too_many_features", GOOD + "1 4:1\n", {"n_features": 3}, 3, "exceeds the 3 features"),
]


def _no_cache(data_dir):
    parsed = data_dir / "parsed"
    return not parsed.exists() or not any(parsed.iterdir())


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_file_raises_with_file_and_line(tmp_path, data_dir, case):
    _, text, opts, line, fragment = case
    f = tmp_path / "bad.svm"
    f.write_bytes(text.encode("utf-8"))
    with pytest.raises(D.DatasetFormatError) as ei:
        D.load(f, **opts)
    e = ei.value
    assert isinstance(e, ValueError) and e.path == str(f) and e.line == line
    prefix = f"{f}:{line}: " if line is not None else f"{f}: "
    assert str(e).startswith(prefix) and fragment in str(e)
    assert _no_cache(data_dir)


def test_error_after_valid_cache_of_other_task(tmp_path, data_dir):
    """A cached, valid file loaded with a task its labels do not fit still raises with the line."""
    f = tmp_path / "mc.svm"
    f.write_text("1 1:1\n2 1:1\n3 2:1\n")
    D.load(f)                                  # multiclass, cached
    with pytest.raises(D.DatasetFormatError) as ei:
        D.load(f, task="binary")
    assert ei.value.line == 3


@pytest.fixture
def tiny_registry(tmp_path, monkeypatch, data_dir):
    """A registry with one 'download' entry whose file the test places in raw/ by hand."""
    reg = tmp_path / "reg" / "registry.toml"
    reg.parent.mkdir()

    def make(n_samples, n_features, text, sha=None):
        import hashlib
        digest = hashlib.sha256(text.encode()).hexdigest() if sha is None else sha
        reg.write_text(f'[toy]\ntask = "binary"\nn_samples = {n_samples}\nn_features = {n_features}\n'
                       f'source = "download"\nfile = "toy"\nsha256 = "{digest}"\n'
                       'url = "http://127.0.0.1:9/toy"\nlicense = "test"\nattribution = "test"\n')
        raw = data_dir / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        (raw / "toy").write_text(text)
        monkeypatch.setenv("PRECOND_REGISTRY", str(reg))
        return raw / "toy"
    return make


def test_more_features_than_registry_is_an_error_not_a_resize(tiny_registry, data_dir):
    path = tiny_registry(3, 3, GOOD + "1 1:1 5:2\n")
    with pytest.raises(D.DatasetFormatError) as ei:
        D.load("toy")
    assert ei.value.line == 3 and str(path) in str(ei.value) and "exceeds the 3 features" in str(ei.value)
    assert _no_cache(data_dir)


def test_wrong_sample_count_for_registry(tiny_registry, data_dir):
    tiny_registry(5, 3, GOOD)
    with pytest.raises(D.DatasetFormatError, match="the file has 2 samples, the registry declares 5"):
        D.load("toy")
    assert _no_cache(data_dir)


def test_registry_entry_loads_when_consistent(tiny_registry):
    tiny_registry(2, 5, GOOD)                   # fewer features used than declared: columns kept
    A, b = D.load("toy")
    assert A.shape == (2, 5) and b.tolist() == [1.0, -1.0]
    assert torch.equal(A[:, :3], torch.tensor([[0.5, 0.0, 2.0], [0.0, 1.0, 0.0]], dtype=torch.float64))
