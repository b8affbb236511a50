"""nbgrader in every pod of a ConvLab class on Kubernetes (deploy/Dockerfile puts it in /etc/jupyter).

The exchange lives on a volume every pod mounts (deploy/zero-to-jupyterhub.yaml); the teacher's pod keeps the
course in ~/course. Pods run as jovyan, for whom nbgrader names a submission after JUPYTERHUB_USER.
"""

import os

c = get_config()  # noqa: F821 (nbgrader defines it)
c.CourseDirectory.course_id = "convlab"
c.Exchange.root = "/srv/nbgrader/exchange"
if os.environ.get("CONVLAB_HUB_ROLE") == "teacher":
    c.CourseDirectory.root = os.path.expanduser("~/course")
    c.Execute.timeout = 600
