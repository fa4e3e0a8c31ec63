"""squall's wrapper for st2 Python actions (`runner_type: python-script`).

squall starts it with a Unix socket as stdin. The first line on the socket is the job (one
JSON document: the entry point, the parameters, the pack's config, the pack, the action and
the log level); the rest of the conversation goes over the same socket as JSON lines:
datastore calls (answered by squall from its key-value store), log records, and at the end
the outcome. The action's own stdout and stderr are left alone: they are the execution's
stdout and stderr. Its stdin, and that of every process it starts, is /dev/null.

Exit codes: 0 when run() returned (its status is in the outcome), 1 when the entry point could
not be loaded or run() raised (the traceback is on stderr), 220 when run() returned a status
that is not a boolean (st2's code for it).
"""

import _thread
import importlib.util
import json
import os
import sys

# Start-up is mostly imports: `inspect`, `socket`, `threading` and `logging` are left out on
# purpose (the socket is read and written as a plain file descriptor), and `traceback` is
# imported when there is a traceback to print.

# st2's exit code for a status that is neither True nor False.
INVALID_STATUS_EXIT_CODE = 220

INVALID_STATUS_MESSAGE = (
    "Status returned from the action run() method must either be True or False, got: %s\n"
    "An action that returns a tuple of two items must return (status, result), with status "
    "True or False; to return a pair as the result, return a list instead."
)


class Channel(object):
    """The socket to squall: one JSON document per line each way."""

    def __init__(self, fd):
        self._fd = fd
        self._buffer = bytearray()
        self._lock = _thread.allocate_lock()

    def read(self):
        searched = 0
        while True:
            end = self._buffer.find(b"\n", searched)
            if end >= 0:
                break
            searched = len(self._buffer)
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise EOFError("squall closed the channel")
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return json.loads(line.decode("utf-8"))

    def _write(self, message):
        data = memoryview((json.dumps(message, default=str) + "\n").encode("utf-8"))
        while data:
            data = data[os.write(self._fd, data):]

    def send(self, message):
        with self._lock:
            self._write(message)

    def call(self, message):
        with self._lock:
            self._write(message)
            return self.read()


def open_channel():
    """Takes the socket squall gave as stdin (a descriptor no child inherits), and puts
    /dev/null in its place."""
    fd = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return Channel(fd)


class DatastoreError(Exception):
    pass


class KeyValuePair(object):
    """A datastore item as `list_values` returns it (st2client's model's attributes)."""

    def __init__(self, name, value, secret=False, encrypted=False, scope="st2kv.system",
                 expire_timestamp=None, **_ignored):
        self.id = name
        self.name = name
        self.value = value
        self.secret = secret
        self.encrypted = encrypted
        self.scope = scope
        self.expire_timestamp = expire_timestamp

    def __repr__(self):
        return "<KeyValuePair name=%s,value=%s>" % (self.name, self.value)


class ActionService(object):
    """`self.action_service`: st2's datastore methods over squall's key-value store.

    As in st2, a `local` name is the pack's and the action class's: `<pack>.<Class>:<name>`.
    """

    def __init__(self, channel, pack, class_name, log_level, user):
        self._channel = channel
        self._pack = pack
        self._class_name = class_name
        self._log_level = log_level
        self._user = user
        self._logger = None

    @property
    def logger(self):
        if self._logger is None:
            from st2common.runners.utils import get_logger_for_python_runner_action

            self._logger = get_logger_for_python_runner_action(
                action_name=self._class_name, log_level=self._log_level
            )
        return self._logger

    def _call(self, message):
        reply = self._channel.call(message)
        if "error" in reply:
            raise DatastoreError(reply["error"])
        return reply

    def _local_prefix(self):
        return "%s.%s:" % (self._pack, self._class_name)

    def _full_name(self, name, local):
        return self._local_prefix() + name if local else name

    @staticmethod
    def _check_scope(scope):
        from st2common.constants.keyvalue import FULL_SYSTEM_SCOPE, SYSTEM_SCOPE

        if scope not in (SYSTEM_SCOPE, FULL_SYSTEM_SCOPE):
            raise ValueError("Scope %s is unsupported." % (scope,))

    def get_user_info(self):
        return {"username": self._user}

    def list_values(self, local=True, prefix=None):
        if local:
            key_prefix = self._local_prefix() + (prefix or "")
        else:
            key_prefix = prefix
        reply = self._call({"op": "list", "prefix": key_prefix})
        return [KeyValuePair(**item) for item in reply.get("items", [])]

    def get_value(self, name, local=True, scope="system", decrypt=False):
        self._check_scope(scope)
        name = self._full_name(name, local)
        try:
            reply = self._call({"op": "get", "name": name, "decrypt": bool(decrypt)})
        except DatastoreError as e:
            self.logger.exception(
                "Exception retrieving value from datastore (name=%s): %s", name, e
            )
            return None
        return reply.get("value")

    def set_value(self, name, value, ttl=None, local=True, scope="system", encrypt=False):
        self._check_scope(scope)
        name = self._full_name(name, local)
        self._call(
            {
                "op": "set",
                "name": name,
                "value": str(value),
                "ttl": int(ttl) if ttl else None,
                "encrypt": bool(encrypt),
            }
        )
        return True

    def delete_value(self, name, local=True, scope="system"):
        self._check_scope(scope)
        name = self._full_name(name, local)
        try:
            reply = self._call({"op": "delete", "name": name})
        except DatastoreError as e:
            self.logger.exception(
                "Exception deleting value from datastore (name=%s): %s", name, e
            )
            return False
        return bool(reply.get("deleted"))


class LoadError(Exception):
    pass


def action_class(path):
    """The one Action subclass the entry point file defines, imported as st2 imports it: under
    the file's name, with the file's folder at the end of the path (after the standard
    library's, so that an action file named like a standard module does not hide it)."""
    from st2common.runners.base_action import Action

    module_name = os.path.splitext(os.path.basename(path))[0]
    # Registered under its name (what pickle and dataclasses look up), unless that name is
    # another module's (`email`, `json`): it would replace that module for every later import.
    try:
        taken = module_name in sys.modules or importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        taken = True
    folder = os.path.dirname(os.path.realpath(path))
    if folder not in sys.path:
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise LoadError('File "%s" cannot be loaded as a Python module' % (path,))
    module = importlib.util.module_from_spec(spec)
    if not taken:
        sys.modules[module_name] = module
    spec.loader.exec_module(module)
    defined = [
        cls
        for cls in vars(module).values()
        if isinstance(cls, type)
        and cls.__module__ == module.__name__
        and issubclass(cls, Action)
        and cls is not Action
    ]
    # A base class and the action built on it, both in the file, are one action.
    leaves = [c for c in defined if not any(o is not c and issubclass(o, c) for o in defined)]
    if not leaves:
        raise LoadError(
            'File "%s" has no Action subclass: an st2 Python action defines one class that '
            "inherits from st2common.runners.base_action.Action and implements run()" % (path,)
        )
    if len(leaves) > 1:
        raise LoadError(
            'File "%s" has %d Action subclasses (%s): an st2 Python action file defines exactly '
            "one" % (path, len(leaves), ", ".join(sorted(c.__name__ for c in leaves)))
        )
    cls = leaves[0]
    if getattr(cls, "__abstractmethods__", None):
        raise LoadError(
            'Class "%s" in "%s" doesn\'t implement required "run" method from the base class'
            % (cls.__name__, path)
        )
    return cls


def instantiate(cls, config, service):
    """As st2: the action service given to the constructor, or set afterwards for an action
    whose constructor does not take it."""
    try:
        return cls(config=config, action_service=service)
    except TypeError as e:
        if "action_service" not in str(e):
            raise
        instance = cls(config=config)
        instance.action_service = service
        return instance


def print_traceback(error):
    """The traceback of an exception raised by the action, on stderr, without the wrapper's
    own frame."""
    import traceback

    tb = error.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb, file=sys.stderr)


def print_load_traceback(error):
    """The traceback of an entry point that could not be loaded, on stderr, with only the
    frames of the action's own files (not the wrapper's, nor the import machinery's)."""
    import traceback

    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if frame.filename != __file__ and not frame.filename.startswith("<frozen")
    ]
    lines = []
    if frames:
        lines.append("Traceback (most recent call last):\n")
        lines.extend(traceback.format_list(frames))
    lines.extend(traceback.format_exception_only(type(error), error))
    sys.stderr.write("".join(lines))


def main():
    channel = open_channel()
    job = channel.read()

    from st2common.runners import utils

    utils._channel = channel

    path = job["entry_point"]
    pack = job.get("pack") or "unknown"
    log_level = job.get("log_level") or "DEBUG"
    try:
        cls = action_class(path)
    except LoadError as e:
        sys.stderr.write("%s\n" % (e,))
        channel.send({"op": "error", "message": str(e)})
        return 1
    except BaseException as e:
        if isinstance(e, (SystemExit, KeyboardInterrupt)):
            raise
        message = (
            'Failed to load action class from file "%s" (action file most likely doesn\'t '
            "exist or contains invalid syntax): %s" % (path, e)
        )
        print_load_traceback(e)
        channel.send({"op": "error", "message": message})
        return 1

    service = ActionService(channel, pack, cls.__name__, log_level, job.get("user"))
    try:
        action = instantiate(cls, job.get("config") or {}, service)
        output = action.run(**(job.get("parameters") or {}))
    except Exception as e:
        print_traceback(e)
        return 1

    if isinstance(output, tuple) and len(output) == 2:
        status, result = output
    else:
        status, result = None, output
    if status is not None and not isinstance(status, bool):
        message = INVALID_STATUS_MESSAGE % (status,)
        sys.stderr.write(message + "\n")
        channel.send({"op": "error", "message": message})
        return INVALID_STATUS_EXIT_CODE
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError, OverflowError):
        # st2's rule: a result JSON cannot hold is given as its str().
        result = str(result)
    sys.stdout.flush()
    sys.stderr.flush()
    channel.send({"op": "outcome", "status": status, "result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
