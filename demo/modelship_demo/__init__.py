"""The live demo (`make demo`): a canary that is promoted and one that is rolled back, on
the local cluster, with real models, real traffic and real Prometheus analysis."""
