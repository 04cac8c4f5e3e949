"""Every Message in every messages module is a frozen, slotted, keyword-only dataclass whose field
types are all immutable; the opaque wire values they carry are frozen in their own modules."""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import importlib
import pkgutil
import types
import typing
from typing import Any, Literal, Optional, Union

import msgspec
import pykka
import pytest

import messages
from messages.base import Message, message

SCALARS = (str, int, bool, bytes, type(None))


def message_modules() -> list[types.ModuleType]:
    return [
        importlib.import_module(f"messages.{info.name}")
        for info in pkgutil.iter_modules(messages.__path__)
    ]


def all_message_classes() -> list[type]:
    # Walk module namespaces, not Message.__subclasses__(): dataclass(slots=True) replaces each
    # class with a new one, and the discarded original can linger among the subclasses.
    found = set()
    for module in message_modules():
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Message) and value.__module__ == module.__name__:
                found.add(value)
    return sorted(found, key=lambda c: (c.__module__, c.__qualname__))


def is_frozen_dataclass(cls: type) -> bool:
    return dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen


def type_problems(tp: Any, where: str, seen: set[type]) -> list[str]:
    """Why ``tp`` admits a mutable value (empty list = fine)."""
    if tp in SCALARS:
        return []
    if tp is float:
        return [f"{where}: float (use integer units)"]
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        bad = [a for a in args if not isinstance(a, (str, int, bool, type(None)))]
        return [f"{where}: Literal of non-scalar {bad}"] if bad else []
    if origin in (Union, types.UnionType):
        return [p for a in args for p in type_problems(a, where, seen)]
    if origin is tuple:
        if not args:
            return [f"{where}: bare tuple (say what it holds)"]
        return [p for a in args if a is not Ellipsis for p in type_problems(a, f"{where}[]", seen)]
    if origin is frozenset:
        return [p for a in args for p in type_problems(a, f"{where}{{}}", seen)]
    if tp is tuple or tp is frozenset:
        return [f"{where}: bare {tp.__name__} (say what it holds)"]
    if origin is not None:
        return [f"{where}: {tp} is not an immutable container"]
    if not isinstance(tp, type):
        return [f"{where}: {tp!r} is not allowed"]
    if issubclass(tp, enum.Enum):
        return []
    if tp is pykka.ActorRef:
        return []  # a handle, not data (peer tables)
    if tp is collections.abc.Hashable:
        return []  # opaque kalshi.ws connection event: checked by test_wire_values_are_frozen
    if issubclass(tp, msgspec.Struct):
        return [] if tp.__struct_config__.frozen else [f"{where}: msgspec Struct {tp.__name__} is not frozen"]
    if issubclass(tp, Message) or is_frozen_dataclass(tp):
        return class_problems(tp, seen) if tp not in seen else []
    return [f"{where}: {tp.__name__} admits mutable values"]


def class_problems(cls: type, seen: set[type] | None = None) -> list[str]:
    seen = set() if seen is None else seen
    seen.add(cls)
    problems = []
    if not dataclasses.is_dataclass(cls):
        return [f"{cls.__qualname__}: not a dataclass"]
    params = cls.__dataclass_params__
    if not params.frozen:
        problems.append(f"{cls.__qualname__}: not frozen")
    if "__slots__" not in cls.__dict__:
        problems.append(f"{cls.__qualname__}: not slotted")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if issubclass(cls, Message) and not f.kw_only:
            problems.append(f"{cls.__qualname__}.{f.name}: not keyword-only")
        problems.extend(type_problems(hints[f.name], f"{cls.__qualname__}.{f.name}", seen))
    return problems


def test_every_messages_module_is_found():
    names = {m.__name__ for m in message_modules()}
    assert {"messages.control", "messages.feed", "messages.market", "messages.account"} <= names


@pytest.mark.parametrize("cls", all_message_classes(), ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_message_is_frozen_slotted_and_immutable(cls):
    assert class_problems(cls) == []


def test_some_messages_are_found():
    classes = {c.__qualname__ for c in all_message_classes()}
    assert {"Tick", "ActorFailed", "FramesReceived", "TradePrinted", "AccountSynced"} <= classes


# The checker itself must catch what it is meant to catch.


@message
class _HasList(Message):
    items: list[int]


@message
class _HasDict(Message):
    table: Optional[dict[str, int]] = None


@message
class _HasAny(Message):
    value: Any


@message
class _HasObject(Message):
    value: object


@message
class _HasFloat(Message):
    price: float


@message
class _HasBareTuple(Message):
    values: tuple


@message
class _HasTupleOfLists(Message):
    values: tuple[list[int], ...]


@message
class _HasBytearray(Message):
    data: bytearray


@message
class _HasSet(Message):
    data: set[str]


class _Thawed(msgspec.Struct):
    x: int


@message
class _HasThawedStruct(Message):
    frame: _Thawed


@dataclasses.dataclass
class _MutableValue:
    x: int


@message
class _HasMutableValue(Message):
    value: _MutableValue


@dataclasses.dataclass(frozen=True)
class _NotSlotted(Message):
    x: int = 0


@pytest.mark.parametrize(
    "cls",
    [
        _HasList, _HasDict, _HasAny, _HasObject, _HasFloat, _HasBareTuple, _HasTupleOfLists,
        _HasBytearray, _HasSet, _HasThawedStruct, _HasMutableValue, _NotSlotted,
    ],
    ids=lambda c: c.__name__,
)
def test_checker_rejects_mutable_or_unsafe_fields(cls):
    assert class_problems(cls)


class _Color(enum.Enum):
    RED = 1


class _FrozenStruct(msgspec.Struct, frozen=True):
    x: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Value:
    ids: tuple[str, ...]


@message
class _Good(Message):
    a: str
    b: int | None
    c: bytes
    d: Literal["yes", "no"]
    e: tuple[tuple[str, int], ...]
    f: frozenset[str]
    g: _Color
    h: _FrozenStruct
    i: _Value
    j: tuple[_Value, ...] = ()
    k: pykka.ActorRef | None = None


def test_checker_accepts_the_allowed_types():
    assert class_problems(_Good) == []


def test_messages_are_immutable_at_runtime():
    from messages.control import Tick

    tick = Tick(now_mono_ns=1, now_wall_ms=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        tick.now_mono_ns = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        Tick(1, 2)  # type: ignore[misc]  # keyword-only
    assert hash(tick) == hash(Tick(now_mono_ns=1, now_wall_ms=2))


@pytest.mark.parametrize("module_name", ["kalshi.wire.frames", "kalshi.ws"])
def test_wire_values_are_frozen(module_name):
    """The opaque values messages carry (frames, connection events) are frozen where defined."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # written by another helper; absent only on a partial checkout
        pytest.skip(f"{module_name} not importable: {exc}")
    checked = 0
    for name, value in vars(module).items():
        if name.startswith("_") or not isinstance(value, type) or value.__module__ != module_name:
            continue
        if issubclass(value, msgspec.Struct):
            assert value.__struct_config__.frozen, f"{module_name}.{name} is not frozen"
            checked += 1
        elif dataclasses.is_dataclass(value):
            assert value.__dataclass_params__.frozen, f"{module_name}.{name} is not frozen"
            checked += 1
    assert checked > 0
