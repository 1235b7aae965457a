from abba_deadlock import run


def test_transfers_in_both_directions() -> None:
    assert run() == (110, 90)
