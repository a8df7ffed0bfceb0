"""Volume backups: a project's volume exported as a tar stream, and imported from one.

The API reads and writes volumes through Docker, but may not import the operator's Docker driver
(layers): it takes any `VolumeArchives`, and `tether api` / `tether up` give it the driver's (as
they give it the driver's container logs). Without one, or without Docker access, the routes
answer 503 and say so.

An import is checked whole before anything is written: it is spooled (at most the size limit),
read as a tar archive, and refused unless every entry lies inside the volume and is a plain file,
a directory or a link; only then does it reach the volume, so a bad archive leaves it unchanged.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import AsyncGenerator
from typing import IO, Protocol

from tether.api.errors import BadArchive

CHUNK_BYTES = 64 * 1024
_ALLOWED = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE)


class VolumeArchives(Protocol):
    """Where volume archives come from and go to
    (`tether.operator.engine.docker.archive.DockerArchives`)."""

    def export(self, project: str, volume: str, image: str) -> AsyncGenerator[bytes, None]:
        """The volume as a tar stream, its entries under `VOLUME/`. Raises
        `ArchivesUnavailable` when Docker cannot be reached (before the first chunk)."""
        ...

    async def import_(
        self, project: str, owner: str, volume: str, image: str, archive: IO[bytes]
    ) -> None:
        """Write a checked archive (entries under `VOLUME/`) into the volume, creating the volume
        if it does not exist yet."""
        ...


def check_archive(archive: IO[bytes], volume: str) -> int:
    """Refuse (`BadArchive`, saying why) anything but a tar archive whose every entry lies in
    `VOLUME/` and is a file, a directory or a link that stays inside it; the entries counted.
    Reads the whole archive, then rewinds it."""
    links: list[str] = []
    count = 0
    try:
        with tarfile.open(fileobj=archive, mode="r:") as tar:
            for member in tar:
                _check_member(member, volume, links)
                count += 1
    except tarfile.TarError as exc:
        raise BadArchive(
            f"the upload is not a readable tar archive ({exc}); nothing was imported",
            hint=f"send a file made by `tether volume export PROJECT {volume}` (or `tar -c`)",
        ) from exc
    if count == 0:
        raise BadArchive("the archive is empty; nothing was imported")
    archive.seek(0)
    return count


def _check_member(member: tarfile.TarInfo, volume: str, links: list[str]) -> None:
    name = member.name.rstrip("/")
    inside = _inside(name, volume)
    if not inside:
        raise BadArchive(
            f"archive entry {member.name!r} is not inside {volume}/; nothing was imported",
            hint=f"every entry must be under '{volume}/', as `tether volume export` writes them",
        )
    if member.type not in _ALLOWED:
        raise BadArchive(
            f"archive entry {member.name!r} is a device, FIFO or other special file; nothing was "
            "imported",
            hint="a volume archive holds files, directories and links only",
        )
    if any(name.startswith(f"{link}/") for link in links):
        raise BadArchive(
            f"archive entry {member.name!r} is reached through a symbolic link; nothing was "
            "imported"
        )
    if member.issym():
        links.append(name)
        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
        if member.linkname.startswith("/") or not _inside(target, volume):
            raise BadArchive(
                f"symbolic link {member.name!r} points outside the volume "
                f"({member.linkname!r}); nothing was imported"
            )
    if member.islnk() and not _inside(posixpath.normpath(member.linkname), volume):
        raise BadArchive(
            f"hard link {member.name!r} points outside the volume; nothing was imported"
        )


def _inside(name: str, volume: str) -> bool:
    if name.startswith("/") or ".." in name.split("/"):
        return False
    return name == volume or name.startswith(f"{volume}/")
