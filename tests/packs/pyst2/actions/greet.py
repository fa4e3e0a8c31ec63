import sys

from st2common.runners.base_action import Action

from helper import shout


class GreetAction(Action):
    def run(self, name, count=1):
        self.logger.info("greeting %s", name)
        self.logger.debug("in %s", self.config["region"])
        print("hello from print")
        sys.stderr.write("a warning on stderr\n")
        return (True, {
            "greeting": shout("hello " + name),
            "count": count,
            "region": self.config["region"],
            "retries": self.config["retries"],
            "prefix": sys.prefix,
        })
