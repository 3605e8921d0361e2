"""Tests of streaming ingestion (gnnsparse.data.ingest) and the synthetic
sx-stackoverflow generator (gnnsparse.data.synthetic).

Real files come from ``$GNNSPARSE_DATA`` (default ``../shared/data`` beside the repository); the
streaming reader must give exactly what the whole-file reader
:func:`gnnsparse.data.readers.read_snap_edges` gives (same edges, same
compacted ids), also with tiny chunks that cut lines.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from gnnsparse.data import ingest
from gnnsparse.data.errors import DataError
from gnnsparse.data.ingest import load_edge_list
from gnnsparse.data.readers import read_snap_edges
from gnnsparse.data.synthetic import write_synthetic_sx

DATA = Path(os.environ.get("GNNSPARSE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
SX = DATA / "snap" / "sx-mathoverflow.txt.gz"
EU = DATA / "snap" / "email-Eu-core-temporal.txt.gz"
EU_STATIC = DATA / "snap" / "email-Eu-core.txt.gz"

needs_data = pytest.mark.skipif(not SX.exists(), reason=f"real data not found under {DATA}")


@pytest.fixture(params=["cxx", "numpy"])
def parser(request, monkeypatch):
    """Run a test with the C++ chunk parser (torch.ops.gnnsparse.parse_edge_chunk) and with
    the numpy parser (what runs without the extension)."""
    if request.param == "cxx":
        from kernel_support import require_extension

        require_extension()
        monkeypatch.setattr(ingest, "_CXX", None)
        assert ingest._cxx_parser() is not None
    else:
        monkeypatch.setattr(ingest, "_CXX", False)
    return request.param

# from ../shared/data/README.md, "Facts counted from the files"
FACTS = {
    SX: dict(lines=506_550, nodes=24_818, self_loops=116_109, pairs=239_978),
    EU: dict(lines=332_334, nodes=986, self_loops=0, pairs=24_929),
}


def _same(g, r):
    assert g.src.dtype == np.int32 and g.dst.dtype == np.int32
    assert g.node_ids.dtype == np.int64
    np.testing.assert_array_equal(g.src, r.src)
    np.testing.assert_array_equal(g.dst, r.dst)
    np.testing.assert_array_equal(g.node_ids, r.node_ids)
    if r.t is None:
        assert g.t is None
    else:
        assert g.t.dtype == np.int64
        np.testing.assert_array_equal(g.t, r.t)


@pytest.fixture(scope="module")
def reference():
    return {p: read_snap_edges(p) for p in (SX, EU, EU_STATIC) if p.exists()}


@needs_data
@pytest.mark.parametrize("name", ["sx", "eu", "eu_static"])
@pytest.mark.parametrize("chunk", [64 << 20, 4093])
def test_matches_readers(reference, name, chunk):
    path = {"sx": SX, "eu": EU, "eu_static": EU_STATIC}[name]
    g = load_edge_list(path, cache=False, chunk_bytes=chunk)
    _same(g, reference[path])
    if chunk < 1 << 20:
        assert g.stats["chunks"] > 10
    facts = FACTS.get(path)
    if facts:
        assert g.num_edges == facts["lines"] and g.num_nodes == facts["nodes"]
        assert int(np.count_nonzero(g.src == g.dst)) == facts["self_loops"]
        u, v = g.static_edges(directed=True)
        assert u.size == facts["pairs"]


@needs_data
def test_views(reference):
    g = load_edge_list(SX, cache=False)
    r = reference[SX]
    order = np.argsort(r.t, kind="stable")
    s, d, t = g.temporal_edges()
    np.testing.assert_array_equal(t, r.t[order])
    np.testing.assert_array_equal(s, r.src[order])
    np.testing.assert_array_equal(d, r.dst[order])
    assert np.all(np.diff(t) >= 0)
    u, v = g.static_edges(directed=False, self_loops=False)
    a, b = np.minimum(r.src, r.dst), np.maximum(r.src, r.dst)
    keep = a != b
    expect = np.unique(a[keep] * r.num_nodes + b[keep])
    np.testing.assert_array_equal(u.astype(np.int64) * r.num_nodes + v, expect)
    assert np.all(u < v)
    np.testing.assert_array_equal(g.original_src(), r.original_src())


def test_static_only_file_has_no_temporal_view(tmp_path):
    p = tmp_path / "e.txt"
    p.write_text("5 7\n7 5\n5 7\n")
    g = load_edge_list(p, cache=False)
    assert g.t is None
    with pytest.raises(ValueError, match="no time column"):
        g.temporal_edges()
    u, v = g.static_edges()
    assert list(zip(u.tolist(), v.tolist())) == [(0, 1), (1, 0)]
    u, v = g.static_edges(directed=False)
    assert list(zip(u.tolist(), v.tolist())) == [(0, 1)]


# ---------------------------------------------------------------- cache


def _entries(cache_dir: Path):
    return sorted(p for p in cache_dir.rglob("*") if p.is_file())


@needs_data
def test_cache_hit_miss_and_invalidation(tmp_path, reference):
    src = tmp_path / "data" / "eu.txt.gz"
    src.parent.mkdir()
    src.write_bytes(EU.read_bytes())
    cache = tmp_path / "cache"
    g1 = load_edge_list(src, cache_dir=cache)
    assert not g1.from_cache
    names = {p.name for p in _entries(cache)}
    assert {"src.npy", "dst.npy", "t.npy", "node_ids.npy", "manifest.json"} <= names
    assert not any(n.endswith(".tmp") for n in names)
    assert sorted(os.listdir(src.parent)) == ["eu.txt.gz"]  # nothing next to the data
    manifest = json.loads(next(cache.rglob("manifest.json")).read_text())
    assert manifest["source"] == str(src.resolve()) and manifest["size"] == src.stat().st_size
    g2 = load_edge_list(src, cache_dir=cache)
    assert g2.from_cache
    assert isinstance(g2.src, np.memmap) and not g2.src.flags.writeable
    _same(g2, reference[EU])
    # change the source: appended line (size and mtime change) -> re-parse
    with open(src, "ab") as fh:
        fh.write(gzip.compress(b"999999 0 1\n"))
    g3 = load_edge_list(src, cache_dir=cache)
    assert not g3.from_cache and g3.num_edges == g1.num_edges + 1
    assert g3.node_ids[-1] == 999999
    g4 = load_edge_list(src, cache_dir=cache)
    assert g4.from_cache and g4.num_edges == g3.num_edges
    # same size, new mtime -> re-parse
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert not load_edge_list(src, cache_dir=cache).from_cache
    assert load_edge_list(src, cache_dir=cache).from_cache


def test_cache_env_var_corrupt_manifest_and_disabled(tmp_path, monkeypatch):
    p = tmp_path / "e.txt"
    p.write_text("1 2 10\n2 3 11\n")
    env_cache = tmp_path / "envcache"
    monkeypatch.setenv("GNNSPARSE_CACHE_DIR", str(env_cache))
    assert not load_edge_list(p).from_cache
    assert load_edge_list(p).from_cache
    mf = next(env_cache.rglob("manifest.json"))
    mf.write_text("{not json")
    g = load_edge_list(p)
    assert not g.from_cache and g.num_edges == 2
    assert load_edge_list(p).from_cache
    other = tmp_path / "none"
    load_edge_list(p, cache_dir=other, cache=False)
    assert not other.exists()


# ---------------------------------------------------------------- bad input


def _lines(n, bad_at=None, bad=None):
    out = []
    for i in range(1, n + 1):
        out.append(bad if i == bad_at else f"{i * 7919 % 100003} {i * 104729 % 99991} {1_200_000_000 + i}")
    return ("\n".join(out) + "\n").encode()


def _line_of(msg: str) -> int:
    return int(msg.split(": line ", 1)[1].split(":", 1)[0])


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "bad, what",
    [
        ("12 3x4 1200000000", "not an integer: '3x4'"),
        ("12 34", "expected 3 columns (as on line 1), got 2"),
        ("12 34 56 78", "expected 3 columns (as on line 1), got 4"),
        ("-12 34 1200000000", "negative value '-12' in column 1"),
        ("12 1_0 1200000000", "'_' separators are not allowed"),
        ("12 99999999999999999999 1200000000", "out of the int64 range"),
    ],
)
def test_bad_line_numbers_across_chunk_boundary(tmp_path, bad, what, gz, parser):
    bad_at = 3000
    data = _lines(5000, bad_at, bad)
    p = tmp_path / ("bad.txt.gz" if gz else "bad.txt")
    p.write_bytes(gzip.compress(data) if gz else data)
    # choose the chunk size so that a chunk boundary falls inside the bad line
    start = sum(len(x) + 1 for x in data.split(b"\n")[: bad_at - 1])
    chunk = start + 3
    with pytest.raises(DataError) as ei:
        load_edge_list(p, cache=False, chunk_bytes=chunk)
    msg = str(ei.value)
    assert str(p) in msg and f"line {bad_at}:" in msg and what in msg, msg
    with pytest.raises(DataError) as ref:
        read_snap_edges(p)
    assert _line_of(str(ref.value)) == bad_at
    for c in (97, 64 << 20):  # other chunkings give the same message
        with pytest.raises(DataError) as e2:
            load_edge_list(p, cache=False, chunk_bytes=c)
        assert str(e2.value) == msg


@needs_data
def test_truncated_and_corrupt_gzip(tmp_path):
    raw = SX.read_bytes()
    p = tmp_path / "trunc.txt.gz"
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="not a valid gzip file.*truncated") as ei:
        load_edge_list(p, cache_dir=tmp_path / "c", chunk_bytes=1 << 20)
    assert str(p) in str(ei.value)
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").rglob("manifest.json"))
    q = tmp_path / "corrupt.txt.gz"
    q.write_bytes(raw[:5000] + bytes(200) + raw[5200:])
    with pytest.raises(DataError, match="not a valid gzip file"):
        load_edge_list(q, cache=False)


def test_other_refusals(tmp_path, parser):
    cases = {
        "empty.txt": b"",
        "comments.txt": b"# only\n#comments\n\n",
        "onecol.txt": b"1\n2\n",
        "nul.txt": b"1 2 3\n4 5\x00 6\n",
        "latin1.txt": b"1 2 3\n4 \xe9 6\n",
    }
    expect = {"empty.txt": "empty file", "comments.txt": "empty file", "onecol.txt": "line 1: expected 2 or 3",
              "nul.txt": "line 2: NUL byte", "latin1.txt": "line 2: undecodable byte"}
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(DataError, match=expect[name]):
            load_edge_list(p, cache=False)
    with pytest.raises(DataError, match="not found"):
        load_edge_list(tmp_path / "missing.txt", cache=False)
    with pytest.raises(DataError, match="directory"):
        load_edge_list(tmp_path, cache=False)


def test_formatting_variants_match_readers(tmp_path, parser):
    data = (b"# header \xe9 latin-1 comment\n  # indented comment\n1\t2 3\r\n\n"
            b"40  5 +6\n7 8 9\n# mid comment\n10 0 -1\n1 2 3")  # no final newline
    p = tmp_path / "v.txt"
    p.write_bytes(data)
    r = read_snap_edges(p)
    for c in (1, 5, 13, 1 << 20):
        _same(load_edge_list(p, cache=False, chunk_bytes=c), r)


# ---------------------------------------------------------------- synthetic


def test_synthetic_small(tmp_path):
    p = write_synthetic_sx(tmp_path / "syn.txt.gz", num_nodes=500, num_edges=4000, seed=3, chunk=333)
    with gzip.open(p, "rt") as fh:
        first = fh.readline()
    assert first.startswith("# SYNTHETIC")
    g = load_edge_list(p, cache=False, chunk_bytes=1000)
    assert g.num_edges == 4000 and g.num_nodes == 500
    assert np.all(np.diff(g.t) >= 0)
    _same(g, read_snap_edges(p))
    deg = np.bincount(np.concatenate([g.src, g.dst]), minlength=g.num_nodes)
    assert deg.min() >= 1 and deg.max() > 20 * np.median(deg)  # heavy tail
    q = write_synthetic_sx(tmp_path / "syn2.txt.gz", num_nodes=500, num_edges=4000, seed=3, chunk=333)
    assert gzip.decompress(p.read_bytes()) == gzip.decompress(q.read_bytes())
    with pytest.raises(ValueError):
        write_synthetic_sx(tmp_path / "x.gz", num_nodes=100, num_edges=10)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["syn.txt.gz", "syn2.txt.gz"]


def test_sparse_and_huge_ids_match_readers(tmp_path, parser):
    # ids beyond int32 (chunks mix int32/int64 pieces) and a sparse id space
    # (np.unique path instead of the dense lookup table)
    p = tmp_path / "big.txt"
    p.write_bytes(b"1 2 5\n3000000000 1 6\n7 7 7\n" + b"4 9000000000000000000 8\n" + b"2 1 9\n")
    r = read_snap_edges(p)
    for c in (1, 7, 1 << 20):
        _same(load_edge_list(p, cache=False, chunk_bytes=c), r)


# ---------------------------------------------------------------- C++ parser, gzip streaming


def _random_edge_text(rng: random.Random, k: int, n: int) -> bytes:
    """Valid edge-list text with every accepted formatting variant."""
    ws = [" ", "  ", "\t", " \t", "\r", "\x0b", "\x0c"]
    lines = []
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            lines.append(rng.choice(ws) * rng.randint(0, 1) + "# comment " + rng.choice(["x y", "1 2 3", "", "#", "\xe9"]))
            continue
        if r < 0.1:
            lines.append(rng.choice(["", " ", "\t", "\r"]))
            continue
        toks = []
        for j in range(k):
            big = rng.random() < 0.05
            v = rng.randint(0, 10**18 - 1) if big else rng.randint(0, 5000)
            tok = str(v)
            if rng.random() < 0.05:
                tok = "0" * rng.randint(1, 18 - len(tok)) + tok if len(tok) < 18 else tok
            toks.append(tok)
        sep = [rng.choice(ws) for _ in range(k - 1)]
        line = toks[0] + "".join(s + t for s, t in zip(sep, toks[1:]))
        if rng.random() < 0.1:
            line = rng.choice(ws) + line
        if rng.random() < 0.1:
            line = line + rng.choice(ws)
        lines.append(line)
    text = "\n".join(lines)
    if rng.random() < 0.5:
        text += "\n"
    return text.encode("latin-1")


@pytest.mark.parametrize("seed", range(6))
def test_cxx_and_numpy_parsers_agree_on_random_text(tmp_path, monkeypatch, seed):
    from kernel_support import require_extension

    require_extension()
    rng = random.Random(seed)
    k = 2 + seed % 2
    data = _random_edge_text(rng, k, 3000)
    p = tmp_path / ("r.txt.gz" if seed % 3 == 0 else "r.txt")
    p.write_bytes(gzip.compress(data) if seed % 3 == 0 else data)
    ref = read_snap_edges(p)
    for chunk in (1, rng.randint(2, 64), rng.randint(65, 5000), 1 << 20):
        monkeypatch.setattr(ingest, "_CXX", False)
        a = load_edge_list(p, cache=False, chunk_bytes=chunk)
        monkeypatch.setattr(ingest, "_CXX", None)
        b = load_edge_list(p, cache=False, chunk_bytes=chunk)
        _same(a, ref)
        _same(b, ref)


def test_cxx_chunk_parser_matches_numpy_chunk_parser(monkeypatch):
    from kernel_support import require_extension

    require_extension()
    import torch

    monkeypatch.setattr(ingest, "_CXX", None)
    cxx = ingest._cxx_parser()
    rng = random.Random(7)
    for trial in range(60):
        k = rng.choice([2, 3])
        data = _random_edge_text(rng, k, rng.randint(0, 60))
        if not data.endswith(b"\n"):
            data += b"\n"
        for known in (0, k):
            st_c, st_n = ingest._State(Path("x")), ingest._State(Path("x"))
            st_c.k = st_n.k = known
            st_c.line0 = st_n.line0 = 5
            got = ingest._parse_cxx(cxx, bytearray(data), st_c)
            want = ingest._parse_fast(data, st_n) or ingest._parse_general(data, st_n)
            assert got is not None, data
            assert got[1] == want[1] == data.count(b"\n")
            assert (st_c.k, st_c.first_data_line) == (st_n.k, st_n.first_data_line)
            assert len(got[0]) == len(want[0]) or got[0][0].size == 0
            for j, (g, w) in enumerate(zip(got[0], want[0])):
                np.testing.assert_array_equal(g, w)
                if j < 2 and g.size:  # ids narrowed per chunk and column, as _ids_small does
                    assert g.dtype == (np.int32 if w.max() < 2**31 else np.int64)
    op = torch.ops.gnnsparse.parse_edge_chunk
    buf = lambda b: torch.frombuffer(bytearray(b), dtype=torch.uint8)  # noqa: E731
    # fall back (ncols -1) on everything the validating parser must judge
    for bad in [b"1 -2\n", b"+1 2\n", b"1 2 3 4\n", b"1\n", b"1 2\n3 4 5\n", b"1 2 # c\n", b"1 2\x00\n",
                b"# c\x00\n", b"1 0x2\n", b"1 2.0\n", b"1 1_0\n", b"1 \xe9\n", b"1 " + b"9" * 19 + b"\n"]:
        assert op(buf(bad), 0)[3] == -1, bad
    assert op(buf(b"1 2 3\n"), 2)[3] == -1
    src, dst, t, k, lines, first = op(buf(b"# h\n\n 7\t8\r\n9 " + b"9" * 18 + b""), 0)
    assert (k, lines, first) == (2, 3, 2) and t.numel() == 0
    assert src.dtype == torch.int32 and dst.dtype == torch.int64
    assert src.tolist() == [7, 9] and dst.tolist() == [8, 10**18 - 1]
    assert op(buf(b"# only\n\n"), 0)[3:] == (0, 2, -1)
    assert op(torch.empty(0, dtype=torch.uint8), 3)[3:] == (3, 0, -1)


def test_cxx_parser_rejects_bad_tensor_arguments():
    from kernel_support import require_extension

    require_extension()
    import torch

    op = torch.ops.gnnsparse.parse_edge_chunk
    good = torch.frombuffer(bytearray(b"1 2\n"), dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="buf must be a uint8 tensor, got Char"):
        op(good.view(torch.int8), 0)
    with pytest.raises(RuntimeError, match="buf must be a uint8 tensor, got Float"):
        op(torch.zeros(4), 0)
    with pytest.raises(RuntimeError, match="buf must be 1-D, got 2-D"):
        op(good.view(2, 2), 0)
    with pytest.raises(RuntimeError, match="buf must be contiguous"):
        op(torch.zeros(8, dtype=torch.uint8)[::2], 0)
    with pytest.raises(RuntimeError, match="ncols must be 0, 2 or 3, got 4"):
        op(good, 4)
    with pytest.raises(RuntimeError, match="buf must be a CPU tensor, got a tensor on meta"):
        op(torch.empty(4, dtype=torch.uint8, device="meta"), 0)
    compact = torch.ops.gnnsparse.compact_edge_ids_
    ids = torch.tensor([3, 1], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="ids must be int32, got Long"):
        compact(ids.long(), ids.clone(), 3)
    with pytest.raises(RuntimeError, match=r"an id is outside 0\.\.2"):
        compact(ids.clone(), ids.clone(), 2)
    with pytest.raises(RuntimeError, match="max_id must be in"):
        compact(ids.clone(), ids.clone(), -1)
    s, d = torch.tensor([5, 0, 9], dtype=torch.int32), torch.tensor([9, 9, 2], dtype=torch.int32)
    assert compact(s, d, 9).tolist() == [0, 2, 5, 9]
    assert s.tolist() == [2, 0, 3] and d.tolist() == [3, 3, 1]


def test_gzip_multi_member_padding_and_truncation(tmp_path, monkeypatch):
    data = _lines(20000)
    parts = [data[:100_003], data[100_003:250_000], data[250_000:]]
    ref_path = tmp_path / "plain.txt"
    ref_path.write_bytes(data)
    ref = read_snap_edges(ref_path)
    multi = tmp_path / "multi.txt.gz"
    multi.write_bytes(b"".join(gzip.compress(x) for x in parts) + b"\x00" * 10)
    for chunk in (333, 1 << 16, 64 << 20):
        _same(load_edge_list(multi, cache=False, chunk_bytes=chunk), ref)
    # output of one zlib call is bounded by chunk_bytes (memory stays bounded)
    monkeypatch.setattr(ingest, "_GZIP_IN_BYTES", 1 << 22)
    with open(multi, "rb") as fh:
        sizes = [len(b) for b in ingest._gunzip_blocks(fh, 4096)]
    assert max(sizes) <= 4096 and sum(sizes) == len(data)
    monkeypatch.undo()
    raw = gzip.compress(data)
    for cut in (10, len(raw) // 3, len(raw) - 4, len(raw) - 1):
        q = tmp_path / "trunc.txt.gz"
        q.write_bytes(raw[:cut])
        with pytest.raises(DataError, match="not a valid gzip file.*truncated gzip data after line"):
            load_edge_list(q, cache=False, chunk_bytes=5000)
    q.write_bytes(raw + b"garbage")
    with pytest.raises(DataError, match="not a valid gzip file"):
        load_edge_list(q, cache=False)
    q.write_bytes(raw[:-8] + bytes(8))  # bad CRC / length trailer
    with pytest.raises(DataError, match="not a valid gzip file"):
        load_edge_list(q, cache=False)


def test_prefetch_thread_matches_and_stops_on_error(tmp_path):
    data = _lines(5000)
    p = tmp_path / "e.txt.gz"
    p.write_bytes(gzip.compress(data))
    a = ingest._parse_file(p, 997, prefetch=True)
    b = ingest._parse_file(p, 997, prefetch=False)
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x, y)
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(gzip.compress(_lines(50000, 20, "1 x 2")))
    before = threading.active_count()
    with pytest.raises(DataError, match="line 20: not an integer"):
        load_edge_list(bad, cache=False, chunk_bytes=1000)
    assert threading.active_count() == before


def test_parse_into_growth_widening_and_statuses(tmp_path, monkeypatch, parser):
    # capacity far below the row count (grows in place) and an id >= 2**31 after int32 rows
    lines = [f"{i % 977} {(i * 31) % 1009} {i}" for i in range(30000)]
    lines[25000] = "4000000000 5 25000"
    p = tmp_path / "g.txt"
    p.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(ingest, "_size_hint", lambda path: 0)
    ref = read_snap_edges(p)
    for chunk in (4093, 1 << 20):
        _same(load_edge_list(p, cache=False, chunk_bytes=chunk), ref)
    if parser != "cxx":
        return
    import torch

    into = torch.ops.gnnsparse.parse_edge_chunk_into
    text = torch.frombuffer(bytearray(b"1 2 3\n4 5 6\n"), dtype=torch.uint8)
    s, d, t = torch.zeros(4, dtype=torch.int32), torch.zeros(4, dtype=torch.int32), torch.zeros(4, dtype=torch.int64)
    assert into(text, 0, s, d, t, 2) == (-3, 5, 2, -1)  # needs rows up to 5
    assert into(text, 0, s, d, t, 1) == (3, 2, 2, 0)
    assert s.tolist() == [0, 1, 4, 0] and d.tolist() == [0, 2, 5, 0] and t.tolist() == [0, 3, 6, 0]
    big = torch.frombuffer(bytearray(b"1 2147483648 3\n"), dtype=torch.uint8)
    assert into(big, 3, s, d, t, 0)[0] == -2
    assert into(big, 3, s.long(), d.long(), t, 0)[:2] == (3, 1)
    assert into(torch.frombuffer(bytearray(b"1 -2 3\n"), dtype=torch.uint8), 3, s, d, t, 0)[0] == -1
    assert into(torch.frombuffer(bytearray(b"7 8\n"), dtype=torch.uint8), 2, s, d, torch.empty(0, dtype=torch.int64), 0) == (2, 1, 1, 0)
    with pytest.raises(RuntimeError, match="src and dst must both be int32 or both int64"):
        into(text, 0, s, d.long(), t, 0)
    with pytest.raises(RuntimeError, match="t must be int64"):
        into(text, 0, s, d, t.int(), 0)
    with pytest.raises(RuntimeError, match="bad offset"):
        into(text, 0, s, d, t, 5)
    with pytest.raises(RuntimeError, match="buf must be a uint8 tensor"):
        into(text.float(), 0, s, d, t, 0)


def test_numpy_parser_when_cxx_disabled_or_missing(tmp_path, monkeypatch):
    p = tmp_path / "e.txt"
    p.write_bytes(b"# c\n3 4 10\n4 3 11\n")
    monkeypatch.setattr(ingest, "_CXX", None)
    monkeypatch.setenv("GNNSPARSE_INGEST_CXX", "0")
    assert ingest._cxx_parser() is None
    g = load_edge_list(p, cache=False)
    assert g.src.tolist() == [0, 1] and g.t.tolist() == [10, 11]
    # extension that fails to load: same numpy path, no error
    from gnnsparse import _ext

    def broken():
        raise ImportError("no _C")

    monkeypatch.setattr(ingest, "_CXX", None)
    monkeypatch.delenv("GNNSPARSE_INGEST_CXX")
    monkeypatch.setattr(_ext, "load", broken)
    assert ingest._cxx_parser() is None
    g = load_edge_list(p, cache=False)
    assert g.dst.tolist() == [1, 0] and g.node_ids.tolist() == [3, 4]
