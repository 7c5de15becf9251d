pytest_plugins = ["modelship_cluster.pytest_plugin"]
