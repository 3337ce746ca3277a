"""The compiled policy's lazily made tables are published whole: the console computes its
pictures on a worker thread while FastAGI decisions read the same tables on the loop."""

from __future__ import annotations

from collections.abc import Iterator

from callgate.policy.compiled import Reach
from callgate.policy.types import Reason


class Watched(frozenset[str]):
    """Members that, while being read to fill a table, look whether that table is visible."""

    reach: Reach | None = None
    seen_while_filling: list[bool]

    def __iter__(self) -> Iterator[str]:
        assert self.reach is not None
        self.seen_while_filling.append(bool(self.reach._grants))
        return super().__iter__()


def test_a_decision_table_is_not_visible_before_it_is_filled() -> None:
    first, second = Watched({"100", "101"}), Watched({"101", "102"})
    seen: list[bool] = []
    reach = Reach(("a", "b"), (first, second))
    for members in (first, second):
        members.reach = reach
        members.seen_while_filling = seen
    table = reach.decisions(Reason.EAVESDROP_GROUP)
    assert seen == [False, False]  # no other reader could have found a part-made table
    assert {ext: d.group for ext, d in table.items()} == {"100": "a", "101": "a", "102": "b"}
    assert reach.decisions(Reason.EAVESDROP_GROUP) is table  # kept once made
