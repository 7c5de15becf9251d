"""The local cluster's node agent: plays kubelet for pods run as local processes."""
