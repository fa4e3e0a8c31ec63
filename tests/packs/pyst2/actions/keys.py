from st2common.runners.base_action import Action


class KeysAction(Action):
    def run(self, mode):
        service = self.action_service
        if mode == "write":
            service.set_value("counter", 41)
            service.set_value("shared", "yes", local=False, ttl=600)
            service.set_value("token", "t0ps3cret", encrypt=True)
            service.set_value("doomed", "x")
            deleted = service.delete_value("doomed")
            return {
                "counter": service.get_value("counter"),
                "missing": service.get_value("nope"),
                "token": service.get_value("token", decrypt=True),
                "deleted": deleted,
                "deleted_again": service.delete_value("doomed"),
                "names": sorted(k.name for k in service.list_values()),
            }
        seed = service.get_value("seed", local=False)
        service.delete_value("counter")
        return {"seed": seed, "counter": service.get_value("counter")}
