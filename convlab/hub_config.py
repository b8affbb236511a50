"""The JupyterHub side of ``python -m convlab hub``: the class's login, its servers, and :func:`configure`, which the
class's ``hub/jupyterhub_config.py`` calls. Only the hub process imports this module (it imports JupyterHub).

- :class:`RosterAuthenticator`: a user logs in with the name and password in the class's ``roster.csv``; the teacher
  is the hub's admin. The roster is read at every login, so a password changed in the file takes effect at once.
- :class:`ClassSpawner`: a server per user, as the system user who started the hub, in ``<class>/home/<user>``
  (JupyterHub's ``SimpleLocalProcessSpawner``: no system account per learner). Before every start it writes what is
  missing (a learner's copies in ``course/``, the teacher's nbgrader course) and never overwrites a file. Its
  kernels get their share of the cores with no setting by the teacher: ``CONVLAB_SHARED_KERNELS`` is the number of
  seats and OpenMP's waiting threads sleep (``OMP_WAIT_POLICY=PASSIVE``).
- :func:`configure`: the hub on 127.0.0.1 behind configurable-http-proxy, its state in ``<class>/hub``, and
  ``jupyterhub-idle-culler`` as a service that stops idle servers.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import sys
from pathlib import Path

from jupyterhub.auth import Authenticator
from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Integer, Unicode, default

from convlab.exercises.copies import make_course_folder
from convlab.hub import ClassFolder, read_roster, teacher_course

__all__ = ["RosterAuthenticator", "ClassSpawner", "configure"]


class RosterAuthenticator(Authenticator):
    """Names and passwords from the class roster (``user,password,role`` CSV, see :func:`convlab.hub.make_roster`)."""

    roster = Unicode(config=True, help="the roster file: CSV with the header user,password,role")

    async def authenticate(self, handler, data):
        account = read_roster(self.roster).get((data.get("username") or "").strip())
        given = (data.get("password") or "").encode()
        if account is not None and hmac.compare_digest(account.password.encode(), given):
            return account.name
        return None

    def check_allowed(self, username, authentication=None):
        return username in read_roster(self.roster)


class ClassSpawner(SimpleLocalProcessSpawner):
    """A server per user in ``<class>/home/<user>``, with the learner's copies or the teacher's course written first
    and the kernels' fair share of the cores set."""

    class_dir = Unicode(config=True, help="the class folder (python -m convlab hub --class-dir)")
    teacher = Unicode(config=True, help="the teacher's user name: their server holds the solutions and nbgrader")
    seats = Integer(1, config=True, help="kernels that share the machine's cores (CONVLAB_SHARED_KERNELS)")
    convlab_home = Unicode(config=True, help="convlab's asset cache, shared by every server (CONVLAB_HOME)")

    @default("home_dir")
    def _default_home_dir(self):
        return str(ClassFolder(Path(self.class_dir)).home(self.user.name))

    @property
    def role(self) -> str:
        return "teacher" if self.user.name == self.teacher else "learner"

    def prepare_home(self) -> None:
        """Write what is missing in the user's home: the teacher's nbgrader course, or the learner's copies."""
        home = Path(self.home_dir)
        home.mkdir(parents=True, exist_ok=True)
        if self.role == "teacher":
            teacher_course(home / "course")
        else:
            make_course_folder(home / "course")

    def get_env(self):
        env = super().get_env()
        config_path = [str(ClassFolder(Path(self.class_dir)).jupyter_config), os.environ.get("JUPYTER_CONFIG_PATH")]
        env.update(
            CONVLAB_SHARED_KERNELS=str(self.seats),
            OMP_WAIT_POLICY="PASSIVE",
            CONVLAB_HOME=self.convlab_home,
            CONVLAB_HUB_ROLE=self.role,
            JUPYTER_CONFIG_PATH=os.pathsep.join(filter(None, config_path)),
        )
        return env

    def get_args(self):
        args = super().get_args()
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--allow-root")  # containers and CI run as root; Jupyter refuses otherwise
        return args

    async def start(self):
        await asyncio.to_thread(self.prepare_home)
        return await super().start()


def configure(c, settings_path: str | os.PathLike) -> None:
    """Configure JupyterHub (``c``, the config object of ``jupyterhub_config.py``) for the class whose settings
    ``python -m convlab hub`` wrote to ``settings_path``."""
    s = json.loads(Path(settings_path).read_text())
    folder = ClassFolder(Path(s["class_dir"]))
    c.JupyterHub.bind_url = f"http://127.0.0.1:{s['port']}"
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{s['hub_port']}"
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{s['proxy_api_port']}"
    c.ConfigurableHTTPProxy.command = [s["proxy"]]
    c.ConfigurableHTTPProxy.pid_file = str(folder.state / "proxy.pid")
    c.JupyterHub.db_url = f"sqlite:///{folder.state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(folder.state / "jupyterhub_cookie_secret")
    c.JupyterHub.authenticator_class = RosterAuthenticator
    c.RosterAuthenticator.roster = str(folder.roster)
    c.Authenticator.admin_users = {s["teacher"]}
    c.Authenticator.any_allow_config = True  # RosterAuthenticator.check_allowed: the roster is the allow list
    c.JupyterHub.spawner_class = ClassSpawner
    c.ClassSpawner.class_dir = str(folder.root)
    c.ClassSpawner.teacher = s["teacher"]
    c.ClassSpawner.seats = int(s["seats"])
    c.ClassSpawner.convlab_home = s["convlab_home"]
    c.Spawner.default_url = "/lab"
    c.Spawner.start_timeout = 180  # a busy 2-core machine starts a server in seconds, a class of them in a minute
    c.Spawner.http_timeout = 120
    cull = int(s["cull_idle"])
    if cull:
        every = max(5, min(300, cull // 3))
        c.JupyterHub.last_activity_interval = every  # the proxy's record of activity, read as often as the culler runs
        c.Spawner.environment = {"JUPYTERHUB_ACTIVITY_INTERVAL": str(every)}
        culler = [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={cull}", f"--cull-every={every}"]
        c.JupyterHub.services = [{"name": "idle-culler", "command": culler}]
        c.JupyterHub.load_roles = [
            {
                "name": "idle-culler",
                "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
                "services": ["idle-culler"],
            }
        ]
