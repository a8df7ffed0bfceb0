"""The container index: trusted only while it can be, and right whichever way a list and the
events seen while it was on its way overlap."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from tether.operator.engine.docker.index import CREATED, DESTROYED, ContainerIndex


@contextlib.contextmanager
def followed(
    listed: list[tuple[str, str]], with_volumes: tuple[str, ...] = ()
) -> Iterator[ContainerIndex]:
    """An index whose events are followed from before its list (as after a resync)."""
    index = ContainerIndex()
    since = time.time()
    with index.listing() as answer:
        answer(listed, with_volumes)
    with index.follow(since):
        yield index


def test_untrusted_until_both_a_list_and_the_events_it_follows() -> None:
    index = ContainerIndex()
    assert index.containers_of("shop") is None
    since = time.time()
    with index.follow(since):
        assert index.containers_of("shop") is None  # events, but no list yet
        with index.listing() as answer:
            answer([("shop", "a")], [])
        assert index.containers_of("shop") == {"a"}
    assert index.containers_of("shop") is None  # the events are no longer followed


def test_a_list_older_than_the_events_followed_is_not_trusted() -> None:
    """Events lost between that list and `since` would be missing."""
    index = ContainerIndex()
    with index.listing() as answer:
        answer([("shop", "a")], [])
    with index.follow(time.time() + 1):
        assert index.containers_of("shop") is None


def test_events_keep_it_up() -> None:
    with followed([("shop", "a")]) as index:
        index.saw(CREATED, "shop", "b")
        index.saw(CREATED, "cart", "c")
        index.saw(DESTROYED, "shop", "a")
        index.saw("start", "shop", "d")  # changes nothing of which containers exist
        assert index.containers_of("shop") == {"b"}
        assert index.containers_of("cart") == {"c"}
        assert index.containers_of("nobody") == frozenset()


def test_its_own_creates_and_removes_count_before_their_events() -> None:
    with followed([]) as index:
        index.created("shop", "a")
        assert index.containers_of("shop") == {"a"}
        index.destroyed("a")
        assert index.containers_of("shop") == frozenset()
        index.destroyed("unknown")  # nothing to forget
        index.saw(DESTROYED, "shop", "a")  # the echo of that remove, later
        assert index.containers_of("shop") == frozenset()


def test_a_container_created_while_a_list_is_on_its_way_is_kept_when_the_answer_lacks_it() -> None:
    with followed([("shop", "a")]) as index:
        with index.listing() as answer:
            index.saw(CREATED, "shop", "b")  # after Docker made its answer
            answer([("shop", "a")], [])
        assert index.containers_of("shop") == {"a", "b"}


def test_a_container_removed_while_a_list_is_on_its_way_stays_gone_when_the_answer_has_it() -> None:
    with followed([("shop", "a"), ("shop", "b")]) as index:
        with index.listing() as answer:
            index.saw(DESTROYED, "shop", "b")
            answer([("shop", "a"), ("shop", "b")], [])
        assert index.containers_of("shop") == {"a"}


def test_created_and_removed_while_a_list_is_on_its_way_is_gone_either_way() -> None:
    for answered in ([("shop", "a")], [("shop", "a"), ("shop", "b")]):
        with followed([("shop", "a")]) as index:
            with index.listing() as answer:
                index.saw(CREATED, "shop", "b")
                index.saw(DESTROYED, "shop", "b")
                answer(answered, [])
            assert index.containers_of("shop") == {"a"}


def test_overlapping_lists_each_keep_the_changes_since_they_began() -> None:
    with followed([]) as index:
        with index.listing() as older:
            index.saw(CREATED, "shop", "a")
            with index.listing() as newer:
                index.saw(CREATED, "shop", "b")
                newer([("shop", "a")], [])
            assert index.containers_of("shop") == {"a", "b"}
            older([], [])  # made before either create
        assert index.containers_of("shop") == {"a", "b"}


class ListFailed(Exception):
    pass


def test_a_list_that_failed_leaves_what_the_index_knew() -> None:
    def fail_a_list(index: ContainerIndex) -> None:
        with index.listing():
            index.saw(CREATED, "shop", "b")
            raise ListFailed

    with followed([("shop", "a")]) as index:
        with pytest.raises(ListFailed):
            fail_a_list(index)
        assert index.containers_of("shop") == {"a", "b"}


def test_volumes_are_asked_for_unless_the_index_knows_there_are_none() -> None:
    assert ContainerIndex().may_have_volumes("shop")  # untrusted: no telling
    with followed([], with_volumes=("db",)) as index:
        assert index.may_have_volumes("db")
        assert not index.may_have_volumes("shop")
        index.volume_created("shop")
        assert index.may_have_volumes("shop")


def test_volume_sizes_are_measured_unless_the_index_knows_there_are_no_volumes() -> None:
    assert ContainerIndex().may_have_any_volumes()  # untrusted: no telling
    with followed([("shop", "a")]) as index:
        assert not index.may_have_any_volumes()
        index.volume_created("shop")
        assert index.may_have_any_volumes()
    with followed([], with_volumes=("db",)) as index:
        assert index.may_have_any_volumes()


def test_a_stream_that_ends_after_the_next_began_leaves_the_next_trusted() -> None:
    index = ContainerIndex()
    since = time.time()
    with index.listing() as answer:
        answer([("shop", "a")], [])
    old = index.follow(since)
    old.__enter__()
    with index.follow(since):
        old.__exit__(None, None, None)
        assert index.containers_of("shop") == {"a"}
