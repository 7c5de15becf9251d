import sys
from pathlib import Path

pytest_plugins = ["modelship_cluster.pytest_plugin"]

# The Kubernetes API stand-in (tests/kube/kube_standin.py) serves the operator's and the
# router's tests too.
sys.path.append(str(Path(__file__).resolve().parent / "kube"))
# The router's harness (real router processes) serves the serving tests' fuzz through it.
sys.path.append(str(Path(__file__).resolve().parent / "router"))
