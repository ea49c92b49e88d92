"""Page sizes and sealed cursors, as pure logic."""
import base64

import pytest

from contracts.paging import DEFAULT_LIMIT, MAX_LIMIT, Cursors, Page, PagingError, cut


def test_a_cursor_opens_to_the_sort_key_it_sealed_and_shows_none_of_it():
    cursors = Cursors(b"k1")
    cursor = cursors.seal(("2026-12-04T00:00:00Z", "bob-secret-worker"))
    assert cursors.open(cursor) == ("2026-12-04T00:00:00Z", "bob-secret-worker")
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    assert b"bob-secret-worker" not in raw and b"2026" not in raw


def test_a_forged_tampered_or_foreign_cursor_is_refused_with_one_line():
    cursors = Cursors(b"k1")
    cursor = cursors.seal(("w-1",))
    tampered = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    for bad in (tampered, Cursors(b"k2").seal(("w-1",)), "not a cursor!", "", "AAAA"):
        if bad == "":
            assert cursors.page(after=bad) == Page()
            continue
        with pytest.raises(PagingError) as refused:
            cursors.page(after=bad)
        assert "\n" not in str(refused.value) and "first page again" in str(refused.value)


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1, "10", 2.5, True])
def test_a_limit_out_of_bounds_or_not_a_whole_number_is_refused(limit):
    with pytest.raises(PagingError, match=f"from 1 to {MAX_LIMIT}"):
        Cursors(b"k").page(limit=limit)


def test_the_default_page_and_the_cut():
    page = Cursors(b"k").page()
    assert page == Page(DEFAULT_LIMIT, None)
    rows, next_key = cut(list(range(4)), Page(3), lambda r: (r,))
    assert rows == [0, 1, 2] and next_key == (2,)
    rows, next_key = cut(list(range(3)), Page(3), lambda r: (r,))
    assert rows == [0, 1, 2] and next_key is None
