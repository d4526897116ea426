"""precond_core.datasets: registry, shipped files, mushrooms encoder, loader, cache, scaling, synthetic."""
import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
import torch

D = pytest.importorskip("precond_core.datasets")
from precond_core.datasets import mushroom  # noqa: E402

ROOT = Path(__file__).resolve().parents[1] / "datasets"
UCI = ROOT / "uci-mushroom" / "agaricus-lepiota.data"
HEART = ROOT / "heart_scale" / "heart_scale"


pytestmark = pytest.mark.usefixtures("data_dir")   # tests/conftest.py: an empty, isolated data directory


def sha(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def _parse_reference(path, n_features):
    """Independent pure-Python LIBSVM reader (ground truth for the libsvm-official pipeline)."""
    rows, ys = [], []
    for line in Path(path).read_text().splitlines():
        tok = line.split()
        ys.append(float(tok[0]))
        r = np.zeros(n_features)
        for t in tok[1:]:
            i, v = t.split(":")
            r[int(i) - 1] = float(v)
        rows.append(r)
    return np.array(rows), np.array(ys)


# -- registry and shipped files ---------------------------------------------------------------------------

def test_registry_has_required_entries_and_fields():
    reg = D.registry()
    for name in ["mushrooms", "heart_scale", "a9a", "w8a", "covtype.binary", "ijcnn1", "phishing", "rcv1.binary",
                 "real-sim", "news20.binary", "breast_cancer", "digits", "fashion_mnist", "cifar10"]:
        e = reg[name]
        assert e.n_samples > 0 and e.n_features > 0 and e.license and e.attribution and e.url.startswith("https://")
    for name, e in reg.items():
        if e.kind == "download":
            assert e.url == "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary/" + e.file
            assert e.sha256 == "" or len(e.sha256) == 64  # unknown checksums are recorded as unknown


def test_shipped_files_match_their_recorded_checksums():
    import re
    table = dict(re.findall(r"^\| `([^`]+)` \| `([0-9a-f]{64})`", (ROOT / "ATTRIBUTION.md").read_text(), re.M))
    assert set(table) == {"uci-mushroom/agaricus-lepiota.data", "uci-mushroom/agaricus-lepiota.names",
                          "heart_scale/heart_scale", "heart_scale/COPYRIGHT"}
    for rel, digest in table.items():
        assert sha(ROOT / rel) == digest, rel
    assert D.registry()["heart_scale"].sha256 == table["heart_scale/heart_scale"]
    assert mushroom.UCI_SHA256 == table["uci-mushroom/agaricus-lepiota.data"]


def test_mushrooms_encoding_is_bit_exact():
    out = mushroom.encode_mushrooms_file(UCI)
    assert hashlib.sha256(out).hexdigest() == "f39a4eb628dc61a7d43760815b061c9e497aa728ce1ad8bde57a09ef6043b538"
    assert D.registry()["mushrooms"].sha256 == hashlib.sha256(out).hexdigest()
    lines = out.decode().splitlines()
    assert len(lines) == 8124 and out.count(b":") == 170604 and mushroom.N_FEATURES == 112


def test_mushrooms_encoder_rejects_unknown_value(tmp_path):
    bad = tmp_path / "m.data"
    rows = UCI.read_text().splitlines()[:3]
    rows[1] = "p,z" + rows[1][3:]   # cap-shape 'z' does not exist
    bad.write_text("\n".join(rows) + "\n")
    with pytest.raises(D.DatasetFormatError, match=r"m\.data:2: attribute 1 has value 'z'"):
        mushroom.encode_mushrooms_file(bad)


# -- loading ------------------------------------------------------------------------------------------------

def test_mushrooms_matches_one_hot_of_uci_file(data_dir):
    ds = D.load_info("mushrooms")
    assert ds.A.shape == (8124, 112) and ds.A.layout == torch.strided and ds.A.dtype == torch.float64
    assert ds.nnz == 170604 and ds.label_map == {1.0: -1.0, 2.0: 1.0}
    # ground truth straight from the UCI file: one-hot of attribute values, p -> -1, e -> +1
    rows = [r.split(",") for r in UCI.read_text().splitlines()]
    X = np.zeros((8124, 112))
    off = 0
    for attr, values in mushroom.ATTRIBUTE_VALUES:
        for i, r in enumerate(rows):
            X[i, off + values.index(r[attr])] = 1.0
        off += len(values)
    y = np.array([1.0 if r[0] == "e" else -1.0 for r in rows])
    assert torch.equal(ds.A, torch.from_numpy(X)) and torch.equal(ds.b, torch.from_numpy(y))
    assert (data_dir / "raw" / "mushrooms").exists() and sha(data_dir / "raw" / "mushrooms") == ds.sha256


def test_heart_scale_matches_reference_parser():
    A, b = D.load("heart_scale")
    X, y = _parse_reference(HEART, 13)
    assert torch.equal(A, torch.from_numpy(X)) and torch.equal(b, torch.from_numpy(y))
    assert set(b.tolist()) == {-1.0, 1.0}


def test_cache_second_load_hits_and_is_fast(data_dir):
    first = D.load_info("mushrooms")
    assert not first.from_cache
    assert len(list((data_dir / "parsed").glob("*.npz"))) == 1
    times = []
    for _ in range(3):
        t = time.perf_counter()
        again = D.load_info("mushrooms")
        times.append(time.perf_counter() - t)
        assert again.from_cache and torch.equal(again.A, first.A) and torch.equal(again.b, first.b)
    assert sorted(times)[1] < 0.5


def test_changed_file_is_never_served_stale(tmp_path, data_dir):
    f = tmp_path / "toy.svm"
    f.write_text("1 1:1 3:2\n-1 2:5\n")
    A1, _ = D.load(f)
    assert D.load_info(f).from_cache
    f.write_text("1 1:7 3:2\n-1 2:5\n")      # same size, different content
    ds = D.load_info(f)
    assert not ds.from_cache and ds.A[0, 0] == 7.0 and A1[0, 0] == 1.0


def test_corrupt_cache_entry_is_replaced(tmp_path, data_dir):
    f = tmp_path / "toy.svm"
    f.write_text("1 1:1 3:2\n-1 2:5\n")
    A1, _ = D.load(f)
    (entry,) = (data_dir / "parsed").glob("*.npz")
    entry.write_bytes(b"garbage")
    ds = D.load_info(f)
    assert not ds.from_cache and torch.equal(ds.A, A1)


def test_registry_file_with_wrong_checksum_is_refused(data_dir):
    raw = data_dir / "raw"
    raw.mkdir(parents=True)
    (raw / "mushrooms").write_text("1 1:1\n")
    with pytest.raises(D.ChecksumError) as ei:
        D.load("mushrooms")
    e = ei.value
    assert e.expected == D.registry()["mushrooms"].sha256 and e.actual == sha(raw / "mushrooms")
    assert e.expected in str(e) and e.actual in str(e) and "re-encode" in str(e)
    assert not (data_dir / "parsed").exists()
    (raw / "mushrooms").unlink()                       # as the message says: re-encoded on the next load
    assert D.load_info("mushrooms").sha256 == e.expected


def test_dense_sparse_and_dtype_options(device):
    A_d, b = D.load("heart_scale", dtype=torch.float32, device=device)
    A_s, b2 = D.load("heart_scale", dense=False, dtype=torch.float32, device=device)
    assert A_d.device.type == A_s.device.type == b.device.type == device
    assert A_d.dtype == torch.float32 and A_s.layout == torch.sparse_csr
    assert torch.equal(A_s.to_dense(), A_d) and torch.equal(b, b2)
    x = torch.randn(13, dtype=torch.float32, generator=torch.Generator().manual_seed(0)).to(device)
    torch.testing.assert_close(A_s @ x, A_d @ x)


def test_auto_density_picks_sparse_for_sparse_file(tmp_path):
    f = tmp_path / "sp.svm"
    f.write_text("".join(f"{(-1) ** i} {i + 1}:1\n" for i in range(40)))   # density 1/40
    A, b = D.load(f)
    assert A.layout == torch.sparse_csr and A.shape == (40, 40)
    assert torch.equal(A.to_dense(), torch.eye(40, dtype=torch.float64))
    assert D.load(f, n_features=50)[0].shape == (40, 50)


def test_scaling_maxabs_and_standard():
    X, _ = _parse_reference(HEART, 13)
    ds = D.load_info("heart_scale", scale="maxabs")
    s = np.abs(X).max(0)
    s[s == 0] = 1
    torch.testing.assert_close(ds.A, torch.from_numpy(X / s), rtol=0, atol=1e-15)
    sp = D.load_info("heart_scale", scale="maxabs", dense=False)
    torch.testing.assert_close(sp.A.to_dense(), ds.A, rtol=0, atol=1e-15)
    st = D.load_info("heart_scale", scale="standard")
    torch.testing.assert_close(st.A.mean(0), torch.zeros(13, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(st.A.std(0, unbiased=False), torch.ones(13, dtype=torch.float64))
    torch.testing.assert_close(st.A * st.scale_factors + st.shift, torch.from_numpy(X))
    with pytest.raises(ValueError, match="standard"):
        D.load("heart_scale", scale="standard", dense=False)
    with pytest.raises(ValueError, match="scale must be one of"):
        D.load("heart_scale", scale="minmax")


def test_multiclass_label_mapping(tmp_path):
    f = tmp_path / "mc.svm"
    f.write_text("7 1:1\n3 2:1\n5 1:2\n3 2:2\n")
    ds = D.load_info(f)
    assert ds.task == "multiclass" and ds.label_map == {3.0: 0, 5.0: 1, 7.0: 2}
    assert ds.b.dtype == torch.int64 and ds.b.tolist() == [2, 0, 1, 0]
    reg = D.load_info(f, task="regression")
    assert reg.b.tolist() == [7.0, 3.0, 5.0, 3.0]


def test_unknown_name_and_bad_options():
    with pytest.raises(D.DatasetError, match="neither a registered dataset"):
        D.load("no_such_set")
    with pytest.raises(ValueError, match="dtype"):
        D.load("heart_scale", dtype=torch.int32)
    with pytest.raises(ValueError, match="n_features is fixed"):
        D.load("heart_scale", n_features=20)


def test_missing_download_dataset_is_unavailable_with_instructions(data_dir):
    with pytest.raises(D.DatasetUnavailable) as ei:
        D.load("a9a")
    msg = str(ei.value)
    assert "fetch('a9a')" in msg and str(data_dir / "raw" / "a9a") in msg and "PRECOND_DATA_DIR" in msg
    assert not (data_dir / "raw").exists() or not any((data_dir / "raw").iterdir())


def test_available_reports_every_entry(data_dir):
    av = D.available()
    assert set(D.registry()) <= set(av)
    assert av["mushrooms"] and av["heart_scale"] and av["breast_cancer"] and av["digits"]
    assert not av["a9a"] and "fetch('a9a')" in av["a9a"].reason
    assert not (data_dir / "raw").exists()   # available() writes nothing


def test_sklearn_sets():
    sk = pytest.importorskip("sklearn.datasets")
    ds = D.load_info("breast_cancer")
    X, y = sk.load_breast_cancer(return_X_y=True)
    assert torch.equal(ds.A, torch.from_numpy(X)) and torch.equal(ds.b, torch.from_numpy(2.0 * y - 1))
    A, b = D.load("digits", layout="image")
    Xd, yd = sk.load_digits(return_X_y=True)
    assert A.shape == (1797, 1, 8, 8) and torch.equal(A.reshape(1797, 64), torch.from_numpy(Xd))
    assert b.dtype == torch.int64 and torch.equal(b, torch.from_numpy(yd))


# -- synthetic -----------------------------------------------------------------------------------------------

def test_synthetic_wrapper_matches_generators():
    try:
        import precond_core.synthetic as syn
    except ImportError as e:
        pytest.skip(f"precond_core.synthetic is not importable yet: {e}")
    A, b = D.load("synthetic:logistic", seed=3)
    A2, b2 = syn.logistic_data(500, 100, seed=3)
    assert A.shape == (500, 100) and torch.equal(A, A2) and torch.equal(b, b2)
    A, y = D.load("synthetic:softmax_40x6")
    assert A.shape == (40, 6) and y.dtype == torch.int64
    As, _ = D.load("synthetic:sparse_logistic_50x1000")
    assert As.layout == torch.sparse_csr and As.shape == (50, 1000)
    Aq = D.synthetic("quadratic", eigenvalues=[1.0, 2.0, 5.0])
    assert Aq is not None
    with pytest.raises(ValueError, match="problems.one_d"):
        D.synthetic("one_d")
    assert all(D.available()[f"synthetic:{k}"] for k in D.SYNTHETIC)


def test_missing_dataset_skips_benchmarks_with_the_message():
    with pytest.raises(pytest.skip.Exception, match=r"fetch\('w8a'\)"):
        D.load_or_skip("w8a")
    with pytest.raises(NotImplementedError, match=r"fetch\('w8a'\)"):
        D.load_or_skip("w8a", runner="asv")
    A, b = D.load_or_skip("heart_scale")
    assert A.shape == (270, 13)


def test_multiclass_with_known_class_count_keeps_class_ids():
    from precond_core.datasets.libsvm_format import map_labels
    y = np.array([1.0, 3.0, 3.0, 2.0])            # labels 1..C with class 4 absent
    mapped, m = map_labels(y, "multiclass", "x", n_classes=4)
    assert mapped.tolist() == [0, 2, 2, 1] and m == {1.0: 0, 2.0: 1, 3.0: 2}
    mapped, _ = map_labels(np.array([0.0, 9.0, 5.0]), "multiclass", "x", n_classes=10)
    assert mapped.tolist() == [0, 9, 5]
    with pytest.raises(D.DatasetFormatError) as ei:
        map_labels(np.array([0.0, 1.0, 2.0]), "multiclass", "x", n_classes=2)
    assert ei.value.line == 3


def test_command_line_list(capsys):
    from precond_core.datasets.__main__ import main
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "mushrooms" in out and "a9a" in out and "fetch('a9a')" in out


def test_import_is_lean():
    import subprocess
    import sys
    # (tqdm and urllib are not checked: torch itself imports them)
    code = ("import sys, precond_core; print('libsvm' in sys.modules, 'scipy' in sys.modules); "
            "import precond_core.datasets as D; print('libsvm' in sys.modules); D.load('heart_scale', cache=False); "
            "print(sorted(m for m in ('sklearn', 'pandas') if m in sys.modules), 'libsvm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:3] == ["False False", "False", "[] True"]
