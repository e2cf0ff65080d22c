"""Objects shared per event loop: made once, counted by their users, dropped by the last."""

from __future__ import annotations

import asyncio
import gc

from cryptoorchestrator.platform.sharing import LoopShares


class Client:
    """Stands for a network client bound to the loop that made it."""

    made = 0

    def __init__(self) -> None:
        Client.made += 1
        self.loop = asyncio.get_running_loop()


def test_users_of_one_loop_share_one_object_until_the_last_lets_go() -> None:
    shares: LoopShares[str, Client] = LoopShares()

    async def scenario() -> None:
        before = Client.made
        a = shares.acquire("binance", Client)
        b = shares.acquire("binance", Client)
        other = shares.acquire("kraken", Client)
        assert a is b
        assert a is not other
        assert Client.made == before + 2
        assert shares.release("binance", a) is False  # b still holds it
        assert shares.acquire("binance", Client) is a  # and a newcomer gets it too
        assert shares.release("binance", a) is False
        assert shares.release("binance", b) is True  # the last user: close it
        fresh = shares.acquire("binance", Client)
        assert fresh is not a  # made anew after the last release
        assert Client.made == before + 3
        assert shares.release("kraken", other) is True

    asyncio.run(scenario())


def test_each_loop_gets_its_own_object() -> None:
    shares: LoopShares[str, Client] = LoopShares()
    kept: list[Client] = []

    async def take() -> None:
        client = shares.acquire("binance", Client)
        assert client.loop is asyncio.get_running_loop()
        kept.append(client)  # never released: a new loop must still not find it

    asyncio.run(take())
    asyncio.run(take())
    assert kept[0] is not kept[1]


def test_releasing_what_was_never_shared_has_no_other_user() -> None:
    shares: LoopShares[str, Client] = LoopShares()

    async def scenario() -> None:
        shared = shares.acquire("binance", Client)
        shares.acquire("binance", Client)
        made_directly = Client()
        assert shares.release("binance", made_directly) is True
        assert shares.release("nothing", made_directly) is True
        # the shared object's count is untouched: two users still hold it
        assert shares.release("binance", shared) is False
        assert shares.release("binance", shared) is True

    asyncio.run(scenario())


def test_a_loop_that_is_gone_takes_its_objects_with_it() -> None:
    # A value that refers to its loop (``Client.loop``) would keep the loop alive through the
    # mapping's strong reference to it: only a value that does not is dropped with its loop.
    shares: LoopShares[str, object] = LoopShares()

    async def take() -> None:
        shares.acquire("binance", object)

    asyncio.run(take())
    gc.collect()
    assert len(shares._by_loop) == 0  # noqa: SLF001 (held weakly by loop)
