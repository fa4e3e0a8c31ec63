"""st2common.runners.utils as squall provides it to st2 Python actions: the action's logger
and the pack config dictionary. Lines logged through the logger reach squall (the execution's
log, and its stderr in st2's format) when squall's wrapper runs the action; imported anywhere
else (a pack's own unit tests), the logger writes to stderr as st2's does.

`logging` is imported when the first logger is made, not before: it is a good part of an
action's start-up.
"""

__all__ = [
    "get_logger_for_python_runner_action",
    "PackConfigDict",
]

# st2's format for an action's log lines.
LOG_FORMAT = "%(name)-12s: %(levelname)-8s %(message)s"

# Set by squall's wrapper: the channel log records go to.
_channel = None

LOGGERS = {}


def _squall_handler():
    """A handler that sends each record to squall: its level, its message (with the
    traceback, if any) and the line st2 would have written to stderr."""
    import logging

    class SquallHandler(logging.Handler):
        _message = logging.Formatter("%(message)s")

        def emit(self, record):
            try:
                _channel.send(
                    {
                        "op": "log",
                        "level": record.levelname,
                        "message": self._message.format(record),
                        "text": self.format(record),
                    }
                )
            except Exception:
                self.handleError(record)

    return SquallHandler()


def get_logger_for_python_runner_action(action_name, log_level="debug"):
    """The logger st2 gives an action as `self.logger`: `actions.python.<class name>`, at
    `log_level` (DEBUG unless the action's `log_level` parameter says otherwise)."""
    import logging

    logger_name = "actions.python.%s" % (action_name,)
    if logger_name in LOGGERS:
        return LOGGERS[logger_name]
    # st2's own level, above CRITICAL.
    audit = logging.CRITICAL + 10
    logging.addLevelName(audit, "AUDIT")
    level_name = str(log_level or "debug").upper()
    level = audit if level_name == "AUDIT" else getattr(logging, level_name, None)
    if not isinstance(level, int):
        level = logging.DEBUG
    logger = logging.getLogger(logger_name)
    handler = _squall_handler() if _channel is not None else logging.StreamHandler()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    LOGGERS[logger_name] = logger
    return logger


class PackConfigDict(dict):
    """The pack's config (`configs/<pack>.yaml`) as a dict whose missing keys say where the
    config comes from."""

    def __init__(self, pack_name, *args):
        super(PackConfigDict, self).__init__(*args)
        self._pack_name = pack_name

    def __getitem__(self, key):
        try:
            return super(PackConfigDict, self).__getitem__(key)
        except KeyError:
            raise KeyError(
                'Key "%s" doesn\'t exist in the config of pack "%s" (configs/%s.yaml)'
                % (key, self._pack_name, self._pack_name)
            )
