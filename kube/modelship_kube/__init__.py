"""A small asyncio Kubernetes API client shared by the operator and the router."""
