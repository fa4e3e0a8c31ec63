"""st2common.runners.base_action as squall provides it: the `Action` class st2 Python actions
inherit from, with st2's constructor and attributes (`config`, `logger`, `action_service`).
"""

import abc

from st2common.runners.utils import PackConfigDict
from st2common.runners.utils import get_logger_for_python_runner_action

__all__ = ["Action"]


class Action(metaclass=abc.ABCMeta):
    """Base class of st2 Python actions: implement `run(self, **parameters)`."""

    description = None

    def __init__(self, config=None, action_service=None):
        self.config = config or {}
        self.action_service = action_service
        self._squall_log_level = getattr(action_service, "_log_level", None) or "debug"
        pack_name = getattr(action_service, "_pack", None) or "unknown"
        self.config = PackConfigDict(pack_name, self.config)

    @property
    def logger(self):
        """st2's `self.logger` (`actions.python.<class name>`), made when first used: importing
        `logging` is a good part of an action's start-up, and many actions never log."""
        logger = self.__dict__.get("_squall_logger")
        if logger is None:
            logger = get_logger_for_python_runner_action(
                action_name=self.__class__.__name__,
                log_level=self.__dict__.get("_squall_log_level", "debug"),
            )
            self.__dict__["_squall_logger"] = logger
        return logger

    @logger.setter
    def logger(self, value):
        self.__dict__["_squall_logger"] = value

    @abc.abstractmethod
    def run(self, **kwargs):
        pass
