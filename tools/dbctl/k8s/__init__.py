"""Kubernetes: the manifests of k8s/dev (render), running their Jobs and reporting them (jobs), and
the API itself through the official client (cluster, the one module that imports `kubernetes`).

Imports: the engine and the foundation.
"""
