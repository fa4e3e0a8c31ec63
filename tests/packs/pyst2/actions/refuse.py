from st2common.runners.base_action import Action


class RefuseAction(Action):
    def run(self):
        return (False, {"why": "not today"})
