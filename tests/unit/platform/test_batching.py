"""The coalescer: calls made together run as one batch, each caller gets its own answer."""

from __future__ import annotations

import asyncio

import pytest

from cryptoorchestrator.platform.batching import Coalescer


class Recorder:
    """A batch function that records its batches and doubles each item."""

    def __init__(self, fail_items: frozenset[int] = frozenset()) -> None:
        self.batches: list[list[int]] = []
        self.fail_items = fail_items

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        await asyncio.sleep(0)  # a batch does I/O: callers must not run ahead of it
        return [ValueError(f"bad {i}") if i in self.fail_items else i * 2 for i in items]


def test_calls_made_together_run_as_one_batch_in_order() -> None:
    run = Recorder()
    batcher = Coalescer(run)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(batcher(i) for i in range(10))))

    assert asyncio.run(main()) == [i * 2 for i in range(10)]
    assert run.batches == [list(range(10))]
    assert (batcher.batches, batcher.items) == (1, 10)


def test_callers_woken_by_one_answer_share_a_batch() -> None:
    # Bots wait for one shared candle request, then each asks for its own write.
    run = Recorder()
    batcher = Coalescer(run)

    async def bot(shared: asyncio.Future[int], i: int) -> int:
        await shared
        return await batcher(i)

    async def main() -> list[int]:
        shared: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        bots = [asyncio.create_task(bot(shared, i)) for i in range(5)]
        await asyncio.sleep(0.01)
        shared.set_result(1)
        return list(await asyncio.gather(*bots))

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]
    assert len(run.batches) == 1


def test_a_lone_call_runs_and_later_calls_start_a_new_batch() -> None:
    run = Recorder()
    batcher = Coalescer(run)

    async def main() -> tuple[int, int]:
        first = await batcher(1)
        second = await batcher(2)
        return first, second

    assert asyncio.run(main()) == (2, 4)
    assert run.batches == [[1], [2]]


def test_an_item_error_reaches_only_its_caller() -> None:
    batcher = Coalescer(Recorder(fail_items=frozenset({3})))

    async def main() -> list[int | BaseException]:
        return list(await asyncio.gather(*(batcher(i) for i in range(5)), return_exceptions=True))

    results = asyncio.run(main())
    assert isinstance(results[3], ValueError)
    assert [r for i, r in enumerate(results) if i != 3] == [0, 2, 4, 8]


def test_a_failed_batch_fails_every_caller() -> None:
    async def broken(items: list[int]) -> list[int]:
        raise ConnectionError("database down")

    batcher = Coalescer(broken)

    async def main() -> list[int | BaseException]:
        return list(await asyncio.gather(*(batcher(i) for i in range(3)), return_exceptions=True))

    assert all(isinstance(r, ConnectionError) for r in asyncio.run(main()))


def test_a_wrong_number_of_results_is_an_error_for_everyone() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batcher = Coalescer(short)

    async def main() -> list[int | BaseException]:
        return list(await asyncio.gather(*(batcher(i) for i in range(3)), return_exceptions=True))

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main()))


def test_max_batch_splits_large_bursts() -> None:
    run = Recorder()
    batcher = Coalescer(run, max_batch=4)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(batcher(i) for i in range(10))))

    assert asyncio.run(main()) == [i * 2 for i in range(10)]
    assert [len(b) for b in run.batches] == [4, 4, 2]


def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    run = Recorder()
    batcher = Coalescer(run)

    async def main() -> list[int]:
        tasks = [asyncio.create_task(batcher(i)) for i in range(3)]
        await asyncio.sleep(0)
        tasks[1].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[1], asyncio.CancelledError)
        return [done[0], done[2]]  # type: ignore[list-item]

    assert asyncio.run(main()) == [0, 4]
    assert run.batches == [[0, 1, 2]]  # the cancelled item still ran (as after a crash)


def test_batches_are_per_event_loop() -> None:
    run = Recorder()
    batcher = Coalescer(run)
    assert asyncio.run(batcher(1)) == 2
    assert asyncio.run(batcher(2)) == 4  # a new loop: no future of the old one is reused
    assert run.batches == [[1], [2]]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="linger_ticks"):
        Coalescer(Recorder(), linger_ticks=-1)
    with pytest.raises(ValueError, match="max_batch"):
        Coalescer(Recorder(), max_batch=0)
