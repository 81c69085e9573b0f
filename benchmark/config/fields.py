"""The field types of the suite configuration and its one validator: pydantic (v2), with its errors read back as one
line naming the field, the value and what is allowed.

The configuration classes (:mod:`benchmark.config.suite`) are pydantic dataclasses closed to unknown keys
(:func:`section`), whose fields use the types below, so the loader is as strict as the harness needs: an integer is
never a bool nor a float and stays below 2**63, a number is finite, a text field may be written as a number
(``eps: 0.031``), a list field may be one value. :func:`build` is the only way from plain data to a configuration
object, and neither it nor a section's constructor lets a pydantic ``ValidationError`` out: the first error becomes
a :class:`~benchmark.errors.ConfigError` line.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from typing import Annotated, Any

import pydantic.dataclasses
from pydantic import AllowInfNan, BeforeValidator, ConfigDict, Field, Strict, StrictBool, ValidationError

from benchmark.errors import ConfigError, short

# every configuration section: unknown keys refused (the "did you mean" of one_line)
SECTION = ConfigDict(extra="forbid")
UNKNOWN_KEY = ("unexpected_keyword_argument", "extra_forbidden", "invalid_key")
NOT_A_MAPPING = ("dataclass_type", "dataclass_exact_type", "model_type")  # a section given as a scalar or list


class FieldError(ConfigError):
    """Raised by a section's rules (its ``model_validator``); :func:`one_line` prefixes the section's path."""

    def __init__(self, name: str, value: Any, allowed: str, *, shown: bool = True) -> None:
        self.name, self.value, self.allowed, self.shown = name, value, allowed, shown
        super().__init__(self._text(name))

    def _text(self, path: str) -> str:
        said = f"got {short(self.value)}, {self.allowed}" if self.shown else self.allowed
        return f"config field '{path}': {said}"

    def at(self, prefix: str) -> ConfigError:
        return ConfigError(self._text(f"{prefix}{self.name}"))

    def __reduce__(self) -> tuple:  # crosses process boundaries (worker pools) as the one line it says
        return ConfigError, (str(self),)


def _number_as_text(value: Any) -> Any:
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _one_as_list(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


Int = Annotated[int, Strict(), Field(gt=-(2**63), lt=2**63)]  # bools and floats refused
Float = Annotated[float, Strict(), AllowInfNan(False)]  # an int is taken as its float; bools and text refused
Bool = StrictBool
Text = Annotated[str, BeforeValidator(_number_as_text, json_schema_input_type=str | float), Strict()]
Mapping = Annotated[dict, Strict()]


def one_or_more(item: Any) -> Any:
    """A tuple field of ``item`` that may also be written as one value (``seeds: 0``) or a list."""
    return Annotated[tuple[item, ...], BeforeValidator(_one_as_list, json_schema_input_type=list[item] | item)]


STRICT_TYPES: dict[Any, Any] = {float: Float, int: Int, bool: Bool, str: Text}


# -- pydantic's errors as the project's one line ---------------------------------------------------------------
def build(cls: type, data: Any, prefix: str = "") -> Any:
    """The configuration object ``cls`` from a mapping (unknown keys, types, ranges and rules checked), or a
    one-line :class:`ConfigError` whose field path starts with ``prefix`` (``"recipes.hydra.search."``)."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or 'suite'}': expected a mapping, got {short(data)}")
    try:
        return cls.__pydantic_validator__.validate_python(data)  # type: ignore[attr-defined]
    except ValidationError as e:
        raise one_line(e, cls, prefix) from None


def section(cls: type) -> type:
    """``cls`` as a configuration section: a frozen pydantic dataclass closed to unknown keys, whose constructor
    (and so ``dataclasses.replace``) raises one :class:`ConfigError` line instead of pydantic's error."""
    cls = pydantic.dataclasses.dataclass(frozen=True, config=SECTION)(cls)
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except ValidationError as e:
            raise one_line(e, type(self)) from None

    cls.__init__ = __init__  # type: ignore[misc]
    return cls


def one_line(error: ValidationError, cls: type, prefix: str = "") -> ConfigError:
    """The first problem of ``error`` (an unknown key before a value, as a reader fixes them) as one line: the
    dotted field path, the value (shortened) and what is allowed."""
    errors = error.errors(include_url=False)
    first = min(errors, key=lambda e: e["type"] not in UNKNOWN_KEY)
    loc, kind, value, ctx = tuple(first["loc"]), first["type"], first.get("input"), first.get("ctx") or {}
    path = (prefix + dotted(loc)).rstrip(".")
    if kind in UNKNOWN_KEY:
        *parent, key = loc
        where = prefix + dotted(tuple(parent)) + ("." if parent else "")
        known = field_names(type_at(cls, tuple(parent)))
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"; did you mean '{where}{close[0]}'?" if close else f"; known: {', '.join(known)}"
        return ConfigError(f"config field '{where}{short(str(key))[1:-1]}' is not known{hint}")
    if kind == "missing":
        parent = loc[:-1]
        missing = [e["loc"][-1] for e in errors if e["type"] == "missing" and tuple(e["loc"][:-1]) == parent]
        return ConfigError(f"config section '{(prefix + dotted(parent)).rstrip('.') or 'suite'}': missing {missing}")
    if kind in NOT_A_MAPPING:
        return ConfigError(f"config section '{path or 'suite'}': expected a mapping, got {short(value)}")
    if kind == "value_error":
        cause = ctx.get("error")
        if isinstance(cause, FieldError):
            return cause.at(prefix + dotted(loc) + ("." if loc else ""))
        if isinstance(cause, ConfigError):  # already a whole line (a nested section, a recipe, the preflight)
            return ConfigError(str(cause))
        return ConfigError(f"config field '{path}': {str(cause)[:300]}")  # e.g. S2APSettings' own checks
    text = allowed(kind, value, ctx, type_at(cls, loc), str(first.get("msg", kind)))
    return ConfigError(f"config field '{path}': got {short(value)}, {text}")


def allowed(kind: str, value: Any, ctx: dict, hint: Any, message: str) -> str:
    """What a field allows, from a pydantic error type (and, for a choice, the field's own choices); pydantic's own
    ``message`` for a kind of error a suite field cannot meet otherwise."""
    if kind == "literal_error":
        choices = [str(c) for c in typing.get_args(_bare(hint))]
        close = difflib.get_close_matches(str(value), choices, n=1)
        return f"must be one of {', '.join(choices)}" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "float_type" and isinstance(value, int) and not isinstance(value, bool):
        return "must be a finite number"  # an integer too large for a float
    texts = {"bool_type": "must be true or false", "int_type": "must be an integer", "float_type": "must be a number",
             "finite_number": "must be a finite number", "string_type": "must be a string",
             "dict_type": "must be a mapping"}
    if kind in texts:
        return texts[kind]
    bounds = {"greater_than": ("gt", "must be > {}"), "greater_than_equal": ("ge", "must be >= {}"),
              "less_than": ("lt", "must be below {}"), "less_than_equal": ("le", "must be at most {}")}
    if kind in bounds:
        name, text = bounds[kind]
        bound = ctx[name]
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        return text.format({2**63: "2**63", -(2**63): "-2**63"}.get(bound, bound))
    return (message[:1].lower() + message[1:])[:200]


def dotted(loc: tuple) -> str:
    """``("methods", 0, "s2ap")`` -> ``"methods[0].s2ap"``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _bare(hint: Any) -> Any:
    """``hint`` without ``Annotated``, ``None`` of an optional and the tuple around items."""
    while True:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is Annotated:
            hint = args[0]
        elif origin in (typing.Union, types.UnionType) and type(None) in args:
            hint = next(a for a in args if a is not type(None))
        else:
            return hint


def type_at(cls: Any, loc: tuple) -> Any:
    """The declared type of the field at ``loc`` below ``cls`` (``None`` where the path leaves the sections)."""
    hint = cls
    for part in loc:
        hint = _bare(hint)
        if isinstance(part, int):
            args = typing.get_args(hint)
            hint = args[0] if typing.get_origin(hint) is tuple and args else None
        elif dataclasses.is_dataclass(hint):
            hint = typing.get_type_hints(hint, include_extras=True).get(part)
        else:
            return None
    return hint


def field_names(hint: Any) -> list[str]:
    hint = _bare(hint)
    return [f.name for f in dataclasses.fields(hint)] if dataclasses.is_dataclass(hint) else []


def input_mapping(cls: type) -> Any:
    """A closed mapping type of a plain dataclass's fields (``S2APSettings``, which lives in the plug-in package
    and stays a stdlib dataclass), each read with the strict type above that matches its declared type."""
    from typing_extensions import NotRequired, TypedDict

    hints = typing.get_type_hints(cls)
    fields = {f.name: NotRequired[STRICT_TYPES[hints[f.name]]] for f in dataclasses.fields(cls)}
    mapping = TypedDict(cls.__name__, fields)  # type: ignore[misc, operator]
    mapping.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    return mapping
