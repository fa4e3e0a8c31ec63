from st2common.runners.base_action import Action


class First(Action):
    def run(self):
        return 1


class Second(Action):
    def run(self):
        return 2
