"""Per-destination pacing with a fake clock: Telegram's 1/s per chat, 30/s per bot."""

from __future__ import annotations

import asyncio

from cryptoorchestrator.platform.notify.ratelimit import TELEGRAM_BOT_S, TELEGRAM_CHAT_S, Pacer


class FakeTime:
    """A monotonic clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_one_chat_gets_one_message_per_second_and_the_bot_thirty() -> None:
    t = FakeTime()
    pacer = Pacer(t.clock, t.sleep)

    async def main() -> None:
        chat = [("tg:bot", TELEGRAM_BOT_S), ("tg:bot:1", TELEGRAM_CHAT_S)]
        for _ in range(3):
            await pacer.wait(chat)
        start = t.now
        for i in range(30):  # thirty other chats of the same bot
            await pacer.wait([("tg:bot", TELEGRAM_BOT_S), (f"tg:bot:c{i}", TELEGRAM_CHAT_S)])
        assert t.now - start < 1.0 + 1e-9

    asyncio.run(main())
    assert t.slept[:2] == [1.0, 1.0]  # the same chat: one message a second


def test_a_hold_delays_the_next_message_and_no_keys_never_wait() -> None:
    t = FakeTime()
    pacer = Pacer(t.clock, t.sleep)

    async def main() -> None:
        assert await pacer.wait([]) == 0.0
        pacer.hold("hook:x", 7.0)
        assert await pacer.wait([("hook:x", 0.5)]) == 7.0
        assert await pacer.wait([("hook:y", 0.5)]) == 0.0

    asyncio.run(main())
