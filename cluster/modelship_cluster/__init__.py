"""The local Kubernetes cluster modelship uses for its tests and demo.

Real etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from
Kubernetes' own Go modules, plus a node agent that runs pods as local processes.
"""
