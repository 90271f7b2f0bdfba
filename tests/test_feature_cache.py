"""Feature cache: values, resume after interruption, settings mismatch, unreadable files, CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dsmn.cli import main as cli
from dsmn.data import Dataset, load_audio, load_dataset
from dsmn.features import CacheMismatchError, FeatureCache, FrontEndConfig, LogMel, ensure_cache


class Interrupted(Exception):
    pass


@pytest.fixture()
def small(tiny_data: Path) -> Dataset:
    """The first 48 clips of the tiny set: enough for several chunks, quick to compute."""
    dataset = load_dataset(tiny_data)
    return Dataset(root=dataset.root, clips=dataset.clips[:48], splits={}, layout="tau")


def test_values_match_the_front_end(small: Dataset, tmp_path: Path) -> None:
    cache = FeatureCache.build(small, tmp_path / "c", workers=0, chunk_size=20, progress=False)
    assert cache.complete and cache.processed == 48 and cache.failed == []
    assert cache.logmels.shape == (48, 256, 44) and cache.logmels.dtype == np.float16
    clip = small.clips[30]
    expected = LogMel()(torch.from_numpy(load_audio(small.path(clip))[0])).numpy()
    assert np.max(np.abs(cache.logmels[cache.row(clip.filename)].astype(np.float32) - expected)) < 0.01
    assert list(cache.rows(small.clips[:3])) == [0, 1, 2]
    again = ensure_cache(small, tmp_path / "c", progress=False)
    assert again.processed == 0 and again.complete


def test_resume_after_interruption(small: Dataset, tmp_path: Path) -> None:
    def stop_after_first_chunk(done: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        FeatureCache.build(small, tmp_path / "c", workers=0, chunk_size=16, progress=False,
                           on_chunk=stop_after_first_chunk)
    partial = FeatureCache.open(tmp_path / "c")
    assert int(partial.done.sum()) == 16 and not partial.complete
    with pytest.raises(KeyError, match="not computed yet"):
        partial.rows(small.clips)
    finished = FeatureCache.build(small, tmp_path / "c", workers=1, chunk_size=16, progress=False)
    assert finished.processed == 48 - 16 and finished.complete
    reference = FeatureCache.build(small, tmp_path / "ref", workers=0, progress=False)
    assert np.array_equal(np.asarray(finished.logmels), np.asarray(reference.logmels))


def test_settings_mismatch_detected(small: Dataset, tmp_path: Path) -> None:
    FeatureCache.build(small, tmp_path / "c", workers=0, progress=False)
    other = dataclasses.replace(FrontEndConfig(), n_mels=128)
    with pytest.raises(CacheMismatchError, match="n_mels 256 -> 128"):
        FeatureCache.open(tmp_path / "c", other)
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = FeatureCache.build(small, tmp_path / "c", config=other, workers=0, progress=False)
    assert rebuilt.processed == 48 and rebuilt.logmels.shape == (48, 128, 44)


def test_unreadable_and_odd_files(tmp_path: Path, capsys) -> None:
    root = tmp_path / "odd"
    park, tram = root / "park", root / "tram"
    park.mkdir(parents=True)
    tram.mkdir()
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(44100)).astype(np.float32)
    sf.write(park / "good.wav", noise, 44100, subtype="PCM_24")
    sf.write(park / "pcm16.wav", noise, 44100, subtype="PCM_16")
    sf.write(park / "stereo.wav", np.stack([noise, noise], axis=1), 44100, subtype="PCM_24")
    sf.write(tram / "rate48k.wav", np.resize(noise, 48000), 48000, subtype="PCM_24")
    sf.write(tram / "short.wav", noise[:20000], 44100, subtype="PCM_24")
    (tram / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (tram / "empty.wav").write_bytes(b"")
    assert cli(["features", str(root), "--workers", "0", "--quiet"]) == 1
    output = capsys.readouterr()
    assert "2 file(s) could not be read" in output.err
    assert "tram/corrupt.wav: not a readable audio file" in output.err and "tram/empty.wav" in output.err
    assert "1 downmixed" in output.out and "1 padded" in output.out and "1 resampled" in output.out
    cache = FeatureCache.open(root / ".dsmn_cache")
    assert sorted(name for name, _ in cache.failed) == ["tram/corrupt.wav", "tram/empty.wav"]
    assert int(cache.done.sum()) == 5 and np.isfinite(np.asarray(cache.logmels, dtype=np.float32)).all()
    dataset = load_dataset(root)
    assert len(cache.usable(dataset.clips)) == 5
    assert cli(["features", str(root), "--workers", "0", "--quiet", "--keep-going"]) == 0
    assert "could not be read" in capsys.readouterr().err
