"""The hard budget of a run: calls, tokens and dollars that must never be exceeded.

Before a request is sent, the client :meth:`Budget.reserve` s one call plus an
upper-bound estimate of its tokens and dollars. The reservation is checked and
taken under one lock, against what was already spent *plus* what other requests
in flight hold, so no number of concurrent requests can overshoot a limit. When
the answer arrives, :meth:`Reservation.commit` replaces the estimate by the
actual usage; when the request fails for good, :meth:`Reservation.release` gives
the estimate back. Retries of one logical request share its one reservation;
answers from the cache reserve nothing.

One ``Budget`` may be shared by several clients and threads (the task model and
the optimizer model of one run draw on the same budget).

A resumed run :meth:`Budget.carry` s what its earlier processes paid (as its run
store records it), so its limits hold across any number of crashes and resumes.
Replays of those calls cost nothing more; :meth:`Budget.replayed` counts them
only for :attr:`Budget.replay_remaining_calls`, the figure an uninterrupted run
had at the same point of its search, which optimizers see.

A stage of ``optimizer: [a, b]`` runs under a :meth:`Budget.cap_calls`: a lower
limit on calls than ``max_calls``, counted on the same spending, whose breach is
a :class:`~promptopt.errors.ShareSpentError` (the stage ends, the next one runs).
"""

from __future__ import annotations

import threading
from typing import Any

from promptopt.errors import BudgetExceededError, ConfigError, PromptoptError, ShareSpentError
from promptopt.llm.types import Usage

__all__ = ["Budget", "Reservation"]


class Reservation:
    """One call's hold on a :class:`Budget`, settled exactly once by commit or release."""

    __slots__ = ("_budget", "_settled", "tokens", "usd")

    def __init__(self, budget: Budget, *, tokens: int, usd: float) -> None:
        self._budget = budget
        self.tokens = tokens
        self.usd = usd
        self._settled = False

    @property
    def settled(self) -> bool:
        return self._settled

    def commit(self, usage: Usage, usd: float) -> None:
        """Replace the estimate by what the call actually used and cost."""
        if self._settled:
            raise PromptoptError("this budget reservation was already committed or released")
        self._settled = True
        self._budget._settle(self, usage=usage, usd=usd)

    def release(self) -> None:
        """Give the estimate back (the request failed, nothing was billed).

        Releasing an already settled reservation does nothing, so a ``finally``
        clause may always call it.
        """
        if self._settled:
            return
        self._settled = True
        self._budget._settle(self, usage=None, usd=0.0)


class Budget:
    """Limits on calls, tokens and dollars; ``None`` means unlimited."""

    def __init__(
        self,
        *,
        max_calls: int | None = None,
        max_tokens: int | None = None,
        max_usd: float | None = None,
    ) -> None:
        for name, value in (
            ("max_calls", max_calls),
            ("max_tokens", max_tokens),
            ("max_usd", max_usd),
        ):
            if value is not None and value < 0:
                raise ConfigError(f"{name} must not be negative, got {value!r}")
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self.max_usd = max_usd
        self._lock = threading.Lock()
        self._calls = 0
        self._tokens = 0
        self._usd = 0.0
        self._held_calls = 0
        self._held_tokens = 0
        self._held_usd = 0.0
        self._carried_calls = 0
        self._carried_tokens = 0
        self._carried_usd = 0.0
        self._replayed_calls = 0
        self._cap: int | None = None

    def cap_calls(self, limit: int | None) -> None:
        """Allow calls only until ``limit`` calls are spent in all (None: lift the cap).

        A stage's share: ``limit`` counts every call of the run, so a stage that
        starts with ``spent`` calls and a share of ``n`` is capped at ``spent + n``.
        Reserving past it raises :class:`ShareSpentError`.
        """
        if limit is not None and limit < 0:
            raise ConfigError(f"a cap on calls must not be negative, got {limit!r}")
        with self._lock:
            self._cap = limit

    @property
    def cap(self) -> int | None:
        return self._cap

    def carry(self, *, calls: int, tokens: int, usd: float) -> None:
        """Count what earlier processes of this run already spent (a resumed run).

        It counts against every limit from now on; a limit already passed makes
        every further reservation fail.
        """
        if calls < 0 or tokens < 0 or usd < 0:
            raise ConfigError(
                f"carried spending must not be negative, got calls={calls!r}, "
                f"tokens={tokens!r}, usd={usd!r}"
            )
        with self._lock:
            self._carried_calls += calls
            self._carried_tokens += tokens
            self._carried_usd += usd

    def replayed(self) -> None:
        """One call that an earlier process paid for was answered again from the run store."""
        with self._lock:
            self._replayed_calls += 1

    def reserve(self, *, tokens: int, usd: float) -> Reservation:
        """Hold one call, ``tokens`` tokens and ``usd`` dollars, or raise BudgetExceededError."""
        if tokens < 0 or usd < 0:
            raise ConfigError(
                f"a reservation must not be negative, got tokens={tokens!r}, usd={usd!r}"
            )
        with self._lock:
            self._check("max_calls", self.max_calls, self._spent_calls(), self._held_calls, 1)
            if self._cap is not None and self._spent_calls() + self._held_calls + 1 > self._cap:
                raise ShareSpentError(
                    f"the stage's share of the budget is spent: {self._cap} calls in all, "
                    f"{self._spent_calls()} spent, {self._held_calls} held by requests in flight"
                )
            self._check(
                "max_tokens", self.max_tokens, self._spent_tokens(), self._held_tokens, tokens
            )
            self._check("max_usd", self.max_usd, self._spent_usd(), self._held_usd, usd)
            self._held_calls += 1
            self._held_tokens += tokens
            self._held_usd += usd
        return Reservation(self, tokens=tokens, usd=usd)

    @staticmethod
    def _check(name: str, limit: float | None, spent: float, held: float, wanted: float) -> None:
        if limit is None or spent + held + wanted <= limit:
            return
        raise BudgetExceededError(
            f"budget {name}={limit!r} would be exceeded: {spent!r} spent, {held!r} held by "
            f"requests in flight, {wanted!r} more requested"
        )

    def _settle(self, reservation: Reservation, *, usage: Usage | None, usd: float) -> None:
        with self._lock:
            self._held_calls -= 1
            self._held_tokens -= reservation.tokens
            self._held_usd -= reservation.usd
            if self._held_calls == 0:  # drop float dust once nothing is in flight
                self._held_usd = 0.0
            if usage is not None:
                self._calls += 1
                self._tokens += usage.total_tokens
                self._usd += usd

    # what the run has spent: this process's committed calls plus what was carried over
    def _spent_calls(self) -> int:
        return self._calls + self._carried_calls

    def _spent_tokens(self) -> int:
        return self._tokens + self._carried_tokens

    def _spent_usd(self) -> float:
        return self._usd + self._carried_usd

    @property
    def calls(self) -> int:
        """Calls the run has paid for: committed here plus carried from earlier processes."""
        with self._lock:
            return self._spent_calls()

    @property
    def tokens(self) -> int:
        with self._lock:
            return self._spent_tokens()

    @property
    def usd(self) -> float:
        with self._lock:
            return self._spent_usd()

    @property
    def carried_calls(self) -> int:
        """Calls paid by earlier processes of this run (see :meth:`carry`)."""
        return self._carried_calls

    @property
    def in_flight(self) -> int:
        """Reservations taken and not yet settled."""
        return self._held_calls

    @property
    def remaining_calls(self) -> int | None:
        """Calls that may still be reserved (under the cap too), or None when unlimited."""
        if self.max_calls is None and self._cap is None:
            return None
        with self._lock:
            limits = [x for x in (self.max_calls, self._cap) if x is not None]
            return max(min(limits) - self._spent_calls() - self._held_calls, 0)

    @property
    def replay_calls(self) -> int:
        """Calls spent as the uninterrupted run had them here (see :attr:`replay_remaining_calls`)."""
        with self._lock:
            return self._calls + self._replayed_calls

    @property
    def replay_remaining_calls(self) -> int | None:
        """:attr:`remaining_calls` as the run had them when it first reached this point.

        Carried calls count only once they are :meth:`replayed`, so at each step a
        resumed run shows its optimizer the figure the uninterrupted run showed,
        and the optimizer proposes the same candidates (its requests then replay).
        """
        if self.max_calls is None and self._cap is None:
            return None
        with self._lock:
            spent = self._calls + self._replayed_calls + self._held_calls
            limits = [x for x in (self.max_calls, self._cap) if x is not None]
            return max(min(limits) - spent, 0)

    @property
    def remaining_tokens(self) -> int | None:
        if self.max_tokens is None:
            return None
        with self._lock:
            return max(self.max_tokens - self._spent_tokens() - self._held_tokens, 0)

    @property
    def remaining_usd(self) -> float | None:
        if self.max_usd is None:
            return None
        with self._lock:
            return max(self.max_usd - self._spent_usd() - self._held_usd, 0.0)

    def snapshot(self) -> dict[str, Any]:
        """Limits, spending (carried included), what was carried, and in-flight holds."""
        with self._lock:
            return {
                "max_calls": self.max_calls,
                "max_tokens": self.max_tokens,
                "max_usd": self.max_usd,
                "calls": self._spent_calls(),
                "tokens": self._spent_tokens(),
                "usd": self._spent_usd(),
                "carried_calls": self._carried_calls,
                "carried_tokens": self._carried_tokens,
                "carried_usd": self._carried_usd,
                "in_flight_calls": self._held_calls,
                "in_flight_tokens": self._held_tokens,
                "in_flight_usd": self._held_usd,
            }

    def __repr__(self) -> str:
        return (
            f"Budget(calls={self.calls}/{self.max_calls}, tokens={self.tokens}/"
            f"{self.max_tokens}, usd={self.usd:.4f}/{self.max_usd})"
        )
