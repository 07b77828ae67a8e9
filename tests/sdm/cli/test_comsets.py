"""-c for a scan: one number, a list, or all; anything else is refused with the choices named."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdm.transport import COMSETS, comset_label, comset_number, parse_comsets


@given(st.lists(st.sampled_from(sorted(COMSETS)), min_size=1, max_size=10))
def test_a_list_keeps_its_order_without_repeats(numbers):
    assert parse_comsets(",".join(map(str, numbers))) == list(dict.fromkeys(numbers))


@given(st.text(max_size=8))
def test_anything_else_is_refused_or_is_a_valid_list(text):
    try:
        parsed = parse_comsets(text)
    except ValueError as err:
        assert "choose 1-6" in str(err)
    else:
        assert parsed and set(parsed) <= set(COMSETS)


def test_all_is_every_setting_and_labels_name_the_flag():
    assert parse_comsets(" ALL ") == [1, 2, 3, 4, 5, 6]
    assert comset_label(COMSETS[5]) == "9600 8E1 (-c 5)"
    assert comset_number(COMSETS[3]) == 3


@pytest.mark.parametrize("text", ["0", "7", "1,,9", "x", "", "+1", "1-3"])
def test_bad_lists_are_refused(text):
    with pytest.raises(ValueError, match="choose 1-6"):
        parse_comsets(text)
