from st2common.runners.base_action import Action


def check(what):
    raise RuntimeError("no " + what + " left")


class CrashAction(Action):
    def run(self, what):
        print("about to fail")
        check(what)
