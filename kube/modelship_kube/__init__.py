"""modelship_kube: the Kubernetes API client shared by the operator and the router."""
