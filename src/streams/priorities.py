"""topics.yaml's ``priorities:`` of a family: its priority lanes (validated).

Kept out of ``streams.catalog`` (which embeds it as ``Family.priorities``) so the catalog
stays small; the picker that consumes lanes fairly is ``streams.core.fairness``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

__all__ = ["Priorities", "check_priority"]

LaneName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=32)]


class Priorities(BaseModel):
    """A family's ``priorities:``: its priority lanes, consumed with weighted fairness
    (``core.fairness``). The ``default`` lane is the family's main topic (an event published
    without a priority lands there); every other lane is its own topic
    ``<family>.lane.<lane>``, co-partitioned with the family. Retry tiers and the DLQ stay
    per family; an event keeps its lane in the ``streams-lane`` header."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lanes: tuple[LaneName, ...] = Field(min_length=2, max_length=8, description="high first")
    default: str
    weights: dict[str, Annotated[int, Field(ge=1, le=1000)]] = Field(
        default_factory=dict, description="lane -> share weight; a lane not listed weighs 1"
    )
    min_share: dict[str, Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        default_factory=dict, description="lane -> the fraction it gets at least while busy"
    )

    @field_validator("lanes")
    @classmethod
    def _unique(cls, lanes: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({lane for lane in lanes if lanes.count(lane) > 1})
        if repeated:
            raise ValueError(f"lane names must be unique, repeated: {', '.join(repeated)}")
        return lanes

    @field_validator("default")
    @classmethod
    def _default_is_a_lane(cls, default: str, info: ValidationInfo) -> str:
        lanes = info.data.get("lanes")
        if lanes is not None and default not in lanes:
            raise ValueError(f"{default!r} is not one of the lanes ({', '.join(lanes)})")
        return default

    @field_validator("weights", "min_share")
    @classmethod
    def _known_lanes(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        lanes = info.data.get("lanes")
        unknown = sorted(set(value) - set(lanes or ()))
        if lanes is not None and unknown:
            raise ValueError(
                f"unknown lane(s) {', '.join(unknown)}; the lanes are {', '.join(lanes)}"
            )
        if info.field_name == "min_share" and sum(value.values()) >= 1.0:
            raise ValueError(f"the minimum shares must sum below 1, got {sum(value.values()):g}")
        return value

    @property
    def other_lanes(self) -> tuple[str, ...]:
        """The lanes with their own topic (all but the default one), in declared order."""
        return tuple(lane for lane in self.lanes if lane != self.default)

    def weight(self, lane: str) -> int:
        return self.weights.get(lane, 1)


def check_priority(family: str, priorities: Priorities | None, priority: str) -> str:
    """``priority`` when it is one of ``family``'s lanes; ValueError naming them otherwise
    (or saying the family has none)."""
    if priorities is None:
        raise ValueError(
            f"family {family!r} has no priority lanes (no 'priorities:' in topics.yaml); "
            "publish it without a priority"
        )
    if priority not in priorities.lanes:
        raise ValueError(
            f"unknown priority {priority!r} for family {family!r}; its lanes are "
            + ", ".join(priorities.lanes)
        )
    return priority
