import os

from st2common.runners.base_action import Action


class SecretAction(Action):
    def run(self, password):
        needle = password.encode()
        seen, hits = 0, 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            seen += 1
            if needle in cmdline:
                hits += 1
        print("the password is " + password)
        return {"processes": seen, "hits": hits, "length": len(password)}
