"""The local Kubernetes cluster modelship uses for its tests and demo.

Real etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from
Kubernetes' own Go modules, and a real node: kubelet with containerd, runc and CNI,
running images built here without a daemon.
"""
