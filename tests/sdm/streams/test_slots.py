"""Per-address slots: never more than the limit, every slot given back, no memory for idle addresses."""

from hypothesis import given
from hypothesis import strategies as st

from sdm.streams.slots import PerAddress


@given(limit=st.integers(1, 4),
       steps=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.booleans()), max_size=60))
def test_slots_follow_a_model(limit, steps):
    slots, model = PerAddress(limit), {}
    for address, take in steps:
        if take:
            assert slots.take(address) == (model.get(address, 0) < limit)
            model[address] = min(limit, model.get(address, 0) + 1)
        elif model.get(address, 0):
            slots.give_back(address)
            model[address] -= 1
        assert slots.held(address) == model.get(address, 0) <= limit
    assert set(slots._held) == {a for a, n in model.items() if n}
