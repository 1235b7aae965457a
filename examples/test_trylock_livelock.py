from trylock_livelock import run


def test_polite_transfers() -> None:
    assert run() == (110, 90)
