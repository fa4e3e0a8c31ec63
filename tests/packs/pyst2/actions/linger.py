import subprocess
import time

from st2common.runners.base_action import Action


class LingerAction(Action):
    def run(self, marker):
        subprocess.Popen(["sh", "-c", "sleep 3; touch '%s'" % marker])
        print("child started", flush=True)
        time.sleep(60)
        return True
