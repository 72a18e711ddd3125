"""Config dataclasses: loadable from YAML, overridable from the command line, validated at start.

A config class is a plain dataclass whose fields have simple types (str, int, float, bool, or
`X | None`), each declared with `option(default, "help")` so that its help sits beside it and `--help` shows
it; every integer field also says its smallest meaningful value, `option(100, "steps", at_least=1)` (a count
where 0 means something says so in its help: "0: off"). `add_config_arguments(parser, cls)` adds one
`--field-name` option per field (no defaults on the parser, so only what the user typed overrides the YAML),
and `load_config(cls, args)` merges: defaults < YAML file (`--config FILE`) < command-line flags, then calls
the class's `validate()`.

Unknown YAML keys, wrong types, integers below their `at_least` and meaningless values are refused with the
file and key named, before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from pathlib import Path

from listopd.util.errors import InputError, ListopdError


def _base_type(annotation) -> tuple[type, bool]:
    """(the scalar type, whether None is allowed) of a field annotation like `float | None`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def _field_types(cls) -> dict[str, tuple[type, bool]]:
    hints = typing.get_type_hints(cls)
    return {f.name: _base_type(hints[f.name]) for f in dataclasses.fields(cls)}


def _parse_bool(text: str) -> bool:
    low = str(text).lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false; got {text!r}")


def option(default=dataclasses.MISSING, help: str = "", *, at_least: int | None = None):  # noqa: A002 - argparse's word
    """A config field with its help text beside it (no default: a required option); `at_least`: the smallest
    value an integer field accepts."""
    return dataclasses.field(default=default, metadata={"help": help, "at_least": at_least})


def field_minimum(cls) -> dict[str, int | None]:
    """Each field's `at_least` (None where it has none)."""
    return {f.name: f.metadata.get("at_least") for f in dataclasses.fields(cls)}


def _int_at_least(minimum: int | None):
    """argparse type for an integer flag that refuses values below `minimum` at parse time."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer ≥ {minimum}, got {text!r}")
        return value

    parse.__name__ = "int"
    return parse


def field_defaults(cls) -> dict:
    """Each option's default value (options without one are left out)."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def field_help(cls) -> dict[str, str]:
    """Each field's help text ("" where a field was declared without `option`)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def add_config_arguments(parser: argparse.ArgumentParser, cls) -> None:
    parser.add_argument("--config", help="YAML file with any of the options below (flags override it)")
    helps, minimum = field_help(cls), field_minimum(cls)
    for name, (typ, _optional) in _field_types(cls).items():
        flag = "--" + name.replace("_", "-")
        doc = helps[name].replace("%", "%%")  # argparse formats help with %
        default = next(f for f in dataclasses.fields(cls) if f.name == name).default
        shown = "" if default is dataclasses.MISSING else f" (default: {default})"
        if typ is bool:  # `--bf16` alone means true; `--bf16 false` is accepted too
            parser.add_argument(flag, dest=name, type=_parse_bool, nargs="?", const=True, default=None,
                                metavar="BOOL", help=doc + shown)
        else:
            parser.add_argument(flag, dest=name, type=_int_at_least(minimum[name]) if typ is int else typ,
                                default=None, metavar=typ.__name__.upper(), help=doc + shown)


def _coerce(value, typ: type, optional: bool, where: str):
    if value is None:
        if optional:
            return None
        raise ListopdError(f"{where}: must not be null")
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ListopdError(f"{where}: expected true or false; got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ListopdError(f"{where}: expected an integer; got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ListopdError(f"{where}: expected a number; got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ListopdError(f"{where}: expected a string; got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {typ}")


def _yaml_loader():
    """yaml.SafeLoader that also reads exponent floats without a dot (`lr: 1e-5`) as numbers, as YAML 1.2
    does; PyYAML follows YAML 1.1 and would hand the trainer the string '1e-5'."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(  # copies the resolver table: SafeLoader itself is left alone
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+0123456789."))
    return Loader


def read_yaml(path: str) -> dict:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("config file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read config: {e}", path=path) from None
    try:
        data = yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise InputError(f"not valid YAML: {getattr(e, 'problem', e)}", path=path,
                         line=None if line is None else line + 1) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("a config file must be a mapping of option: value", path=path)
    return data


def config_from_dict(cls, data: dict, source: str = "config"):
    """Build and validate `cls` from a plain dict (YAML contents); errors name `source` and the key."""
    types_ = _field_types(cls)
    # what a run writes beside its options in its config.json (a record, e.g. OPDConfig's "cliff_check"), so that the
    # file is a config again: `listopd opd --config <run>/config.json`
    data = {k: v for k, v in data.items() if k not in getattr(cls, "RECORDED_KEYS", ())}
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ListopdError(f"{source}: unknown option(s) {', '.join(map(repr, unknown))}; "
                           f"known: {', '.join(types_)}")
    values = {k: _coerce(v, *types_[k], where=f"{source}: option '{k}'") for k, v in data.items()}
    low = _below_minimum(cls, values)
    if low:
        raise ListopdError(f"{source}: option '{low[0]}' must be ≥ {low[1]}; got {low[2]}")
    missing = [f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               and f.name not in values]
    if missing:
        raise ListopdError(f"{source}: missing required option(s) {', '.join(missing)}")
    config = cls(**values)
    if hasattr(config, "validate"):
        config.validate()
    return config


def load_config(cls, args: argparse.Namespace):
    """defaults < YAML (--config) < flags given on the command line."""
    data = read_yaml(args.config) if getattr(args, "config", None) else {}
    source = args.config or "command line"
    for name in _field_types(cls):
        value = getattr(args, name, None)
        if value is not None:
            data[name] = value
    try:
        return config_from_dict(cls, data, source=source)
    except ListopdError as e:  # name the file for validate()'s errors too
        if args.config and not str(e).startswith(source):
            raise ListopdError(f"{source}: {e}") from None
        raise


def config_to_dict(config) -> dict:
    return dataclasses.asdict(config)


def _below_minimum(cls, values: dict) -> tuple[str, int, int] | None:
    """(name, at_least, value) of the first integer in `values` below its field's `at_least`, or None."""
    minimum = field_minimum(cls)
    for name, value in values.items():
        if minimum.get(name) is not None and isinstance(value, int) and value < minimum[name]:
            return name, minimum[name], value
    return None


def check_at_least(config) -> None:
    """Refuse any integer field of `config` below its `at_least` (each config's validate() starts here)."""
    low = _below_minimum(type(config), dataclasses.asdict(config))
    if low:
        raise ListopdError(f"invalid config: {low[0]} must be ≥ {low[1]}; got {low[2]}")


def require(ok: bool, message: str) -> None:
    """Refuse a meaningless or contradictory setting with its reason."""
    if not ok:
        raise ListopdError(f"invalid config: {message}")


def finite_positive(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0
