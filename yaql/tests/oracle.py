"""Reference evaluator for the differential test: Python's yaql, set up as Orquesta sets it up.

Reads JSON lines {"expr": ..., "data": ...} on stdin and prints one JSON line per input:
{"value": ...} or {"error": "..."}.
"""
import collections.abc  # noqa: F401 - yaql uses collections.abc without importing it
import json
import sys

import yaql
import yaql.language.utils as yaql_utils

ENGINE = yaql.language.factory.YaqlFactory().create()
ROOT = yaql.create_context()

try:
    # Orquesta registers its own functions (ctx(), task_status(), ...) on the root context.
    from orquesta.expressions.functions import base as func_base

    for _name, _func in func_base.load().items():
        ROOT.register_function(_func, name=_name)
except ImportError:
    pass


def to_json(value):
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "__iter__"):
        return [to_json(v) for v in value]
    raise TypeError("not JSON: %r" % (value,))


def evaluate(expr, data):
    ctx = ROOT.create_child_context()
    converted = yaql_utils.convert_input_data(data)
    ctx["$"] = converted
    ctx["__vars"] = converted if isinstance(data, dict) else {}
    result = ENGINE(expr).evaluate(context=ctx)
    return to_json(result)


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        case = json.loads(line)
        try:
            out = {"value": evaluate(case["expr"], case.get("data"))}
            text = json.dumps(out, allow_nan=False)
        except Exception as e:  # noqa: BLE001 - every failure is an answer here
            text = json.dumps({"error": "%s: %s" % (type(e).__name__, e)})
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
