"""One audio clip of a dataset and what its file name tells about it."""

from __future__ import annotations

from dataclasses import dataclass

from dsmn.labels import scene_id as _scene_id


@dataclass(frozen=True)
class Clip:
    """A clip as the training and evaluation code sees it.

    `filename` is relative to the dataset root (`audio/...wav` in TAU layouts), so a dataset folder
    can move without invalidating caches or prediction files. `identifier` is the recording location
    (`city-location`); train and evaluate never share one. `segment` + `slice` place a 1-s clip in its
    10-s recording; clips of the same recording by different devices are parallel recordings.
    """

    filename: str
    scene: str | None
    device: str | None = None
    city: str | None = None
    identifier: str | None = None
    segment: str | None = None
    slice: int | None = None

    @property
    def scene_id(self) -> int:
        """Class id in `dsmn.labels.SCENES` order; an error for unlabelled (test) clips."""
        if self.scene is None:
            raise ValueError(f"{self.filename}: clip has no scene label")
        return _scene_id(self.scene)

    @property
    def recording(self) -> tuple[str | None, str | None, int | None]:
        """What parallel recordings share: location, segment and slice (the device differs)."""
        return (self.identifier, self.segment, self.slice)
