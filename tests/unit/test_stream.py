"""The one per-pair path (dwsfusion.stream): every form of fusion gives what fusing each pair
alone gives, in order, with bad pairs named and the others fused."""

import numpy as np

from dwsfusion.checkpoints import load_generator
from dwsfusion.color import decode_image_bytes, encode_png
from dwsfusion.evaluate import score_fused
from dwsfusion.fuse import fuse_pair
from dwsfusion.pairs import find_pairs
from dwsfusion.stream import EncodedPair, StreamOptions, file_pair, fuse_and_score, fuse_pairs, fuse_stream


def _pairs(samples_dir):
    pairs, _ = find_pairs(samples_dir / "ir", samples_dir / "vi")
    return pairs


def test_the_stream_gives_what_each_pair_alone_gives_in_order(random_checkpoint, samples_dir):
    generator = load_generator(random_checkpoint).eval()
    pairs = _pairs(samples_dir)
    as_bytes = [EncodedPair(p.stem, str(p.ir), str(p.vi), p.ir.read_bytes(), p.vi.read_bytes()) for p in pairs]
    broken = EncodedPair("broken", "night/broken.ir.png", "night/broken.vi.png", b"not an image", b"x")
    items = [as_bytes[0], broken, *as_bytes[1:], *map(file_pair, pairs)]  # bytes and files, one stream
    for options in (StreamOptions(), StreamOptions(("Qabf", "SSIM"), batch_size=3, threads=2)):
        results = list(fuse_stream(generator, items, options))
        assert [r.key for r in results] == [i.key for i in items]
        assert "night/broken.ir.png: not a readable image" in results[1].error and results[1].png is None
        fused = [r for r in results if r.error is None]
        assert len(fused) == 2 * len(pairs)
        for result, pair in zip(fused, pairs + pairs, strict=True):
            alone = fuse_pair(generator, pair)
            assert result.png == encode_png(alone)
            assert np.array_equal(decode_image_bytes(result.png, "fused")[0][..., ::-1].squeeze(), alone.squeeze())
            if options.metrics:
                assert result.scores == score_fused(pair, alone, options.metrics)
            assert result.seconds > 0


def test_a_missing_file_is_named_and_the_rest_go_on(random_checkpoint, samples_dir, tmp_path):
    generator = load_generator(random_checkpoint).eval()
    pairs = _pairs(samples_dir)
    gone = pairs[0].__class__("gone", tmp_path / "gone.png", pairs[0].vi)
    rows = fuse_and_score(generator, [gone, *pairs], tmp_path / "out", StreamOptions(("SSIM",)))
    assert rows[0] == {"name": "gone", "error": f"{tmp_path / 'gone.png'}: file not found"}
    assert [r["name"] for r in rows[1:]] == [p.stem for p in pairs] and all("SSIM" in r for r in rows[1:])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{p.stem}.png" for p in pairs)


def test_fuse_pairs_writes_each_image_as_fuse_pair_makes_it(random_checkpoint, samples_dir, tmp_path):
    generator = load_generator(random_checkpoint).eval()
    pairs = _pairs(samples_dir)
    report = fuse_pairs(generator, pairs, tmp_path, progress=False)
    assert report.failed == [] and [p.name for p in report.written] == [f"{p.stem}.png" for p in pairs]
    for pair in pairs:
        assert (tmp_path / f"{pair.stem}.png").read_bytes() == encode_png(fuse_pair(generator, pair))
